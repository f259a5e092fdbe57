"""A user's API tokens: create (the secret is shown once), list (prefix only), revoke."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from overcast.server.auth import current_user, db_session, hash_token, issue_token
from overcast.server.usage import LastUsed
from overcast.server.validation import DbId, fits_db
from overcast.server.views import iso
from overcast.store.models import ApiToken, User

router = APIRouter(prefix="/tokens", tags=["tokens"])


class NewToken(BaseModel):
    name: str = Field(default="default", min_length=1, max_length=64)


def token_view(row: ApiToken, last_used: LastUsed | None = None) -> dict:
    # A use noted in memory but not written yet (batches, see overcast.server.usage) counts.
    pending = last_used.pending_token(row.id) if last_used is not None else None
    return {"id": row.id, "name": row.name, "prefix": row.prefix,
            "created_at": iso(row.created_at), "last_used_at": iso(pending or row.last_used_at),
            "revoked": row.revoked}


def user_tokens(session: Session, user: User) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user.id)
                                .order_by(ApiToken.id.desc())))


def create(session: Session, user: User, name: str) -> tuple[ApiToken, str]:
    secret = issue_token(session, user, name=name)
    session.flush()
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(secret)))
    return row, secret


def revoke(session: Session, user: User, token_id: int) -> ApiToken:
    row = session.get(ApiToken, token_id) if fits_db(token_id) else None
    if row is None or row.user_id != user.id:  # someone else's token: not found, not 403
        raise HTTPException(404, f"You have no token {token_id}.")
    row.revoked = True
    return row


@router.get("")
def list_tokens(request: Request, user: User = Depends(current_user),
                session: Session = Depends(db_session)) -> list[dict]:
    return [token_view(r, request.app.state.last_used) for r in user_tokens(session, user)]


@router.post("", status_code=201)
def create_token(body: NewToken, user: User = Depends(current_user),
                 session: Session = Depends(db_session)) -> dict:
    row, secret = create(session, user, body.name)
    return {**token_view(row), "token": secret}  # the only time the secret leaves the server


@router.delete("/{token_id}", status_code=204)
def revoke_token(token_id: DbId, user: User = Depends(current_user),
                 session: Session = Depends(db_session)) -> Response:
    revoke(session, user, token_id)
    return Response(status_code=204)
