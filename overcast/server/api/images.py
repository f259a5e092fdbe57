"""VM images: `GET|POST /accounts/{slug}/images` (users) and the builder's one-time report
`POST /images/builds/{id}/report` (Bearer build token)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel
from sqlalchemy.orm import Session

from overcast import crypto
from overcast.server.api.clusters import wake
from overcast.server.auth import AccountAccess, admin_of, bearer, db_session, member_of
from overcast.server.services import images as service
from overcast.server.validation import DbId
from overcast.store.models import Image

router = APIRouter(tags=["images"])


class BuildRequest(BaseModel):
    region: str | None = None


class BuildReport(BaseModel):
    ok: bool
    reason: str | None = None


@router.get("/accounts/{slug}/images")
def list_images(access: AccountAccess = Depends(member_of),
                session: Session = Depends(db_session)) -> list[dict]:
    return service.list_images(session, access.account)


@router.post("/accounts/{slug}/images", status_code=202)
def build_image(request: Request, body: BuildRequest | None = None,
                access: AccountAccess = Depends(admin_of),
                session: Session = Depends(db_session)) -> dict:
    try:
        view = service.start_build(session, access.account, (body or BuildRequest()).region,
                                   user=access.user)
    except service.ImageRequestError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    wake(request)
    return view


@router.post("/images/builds/{build_id}/report", status_code=204)
def report(build_id: DbId, body: BuildReport, request: Request,
           session: Session = Depends(db_session)) -> None:
    token = bearer(request)
    row = session.get(Image, build_id)
    # One-time: the token is dropped once used, and a finished build has none.
    if row is None or not row.token_encrypted or row.state not in ("pending", "building") or \
            not hmac.compare_digest(token, crypto.decrypt(row.token_encrypted)):
        raise HTTPException(404, "No image build waiting for this token.")
    row.reported = "ok" if body.ok else "failed"
    if not body.ok:
        row.reason = (body.reason or "the bootstrap script failed")[:500]
    row.token_encrypted = None
    session.commit()
    wake(request)
