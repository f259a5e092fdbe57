"""Software environment routes: create (a new version when the spec changed), list, show,
delete. Requests do DB work and, for pip / requirements specs, a metadata-only lock (uv)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel
from sqlalchemy.orm import Session

from overcast.server.auth import AccountAccess, db_session, member_of
from overcast.server.services import envs as service
from overcast.server.validation import MAX_DB_ID

router = APIRouter(prefix="/accounts/{slug}/software-environments",
                   tags=["software-environments"])


class EnvCreate(BaseModel):
    name: str
    spec: dict[str, Any]


def _refused(session: Session, exc: service.EnvError) -> HTTPException:
    session.rollback()
    return HTTPException(exc.status, exc.message)


@router.post("", status_code=201)
def create_environment(body: EnvCreate, access: AccountAccess = Depends(member_of),
                       session: Session = Depends(db_session)) -> dict:
    try:
        row, created = service.create_environment(session, access.account, body.name,
                                                  body.spec)
    except service.EnvError as exc:
        raise _refused(session, exc) from None
    if created:
        from overcast.store.notify import notify

        notify(session, access.account.id, "env-created",
               f"Software environment {row.name} v{row.version} created by "
               f"{access.user.username} ({row.spec['kind']})")
    session.commit()
    return service.env_view(row) | {"created": created}


@router.get("")
def list_environments(access: AccountAccess = Depends(member_of),
                      session: Session = Depends(db_session)) -> list[dict]:
    return [service.env_view(r, with_lock=False)
            for r in service.list_environments(session, access.account)]


@router.get("/{name}")
def get_environment(name: str, version: int | None = Query(default=None, ge=1, le=MAX_DB_ID),
                    access: AccountAccess = Depends(member_of),
                    session: Session = Depends(db_session)) -> dict:
    try:
        return service.env_view(service.get_environment(session, access.account, name,
                                                        version))
    except service.EnvError as exc:
        raise _refused(session, exc) from None


@router.delete("/{name}")
def delete_environment(name: str, access: AccountAccess = Depends(member_of),
                       session: Session = Depends(db_session)) -> dict:
    try:
        n = service.delete_environment(session, access.account, name)
    except service.EnvError as exc:
        raise _refused(session, exc) from None
    session.commit()
    return {"name": name, "deleted_versions": n}
