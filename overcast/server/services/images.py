"""The overcast VM images of an account: listing and asking for a build (API and web pages).

Hosted accounts share the operator's image of each region (scope "operator"); an account with
its own AWS backend has its own images (scope = its slug). The reconciler does the building.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from overcast import tags
from overcast.options import OptionError, check_region
from overcast.reconciler.images import request_build
from overcast.server.views import iso
from overcast.store.models import Account, Backend, Image, User


class ImageRequestError(ValueError):
    """A build that cannot be asked for; the message says what to change."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def image_view(row: Image) -> dict[str, Any]:
    return {"id": row.id, "region": row.region, "version": row.version, "state": row.state,
            "reason": row.reason, "image_id": row.aws_id, "name": row.name,
            "builder_id": row.builder_id, "source_image": row.source_image,
            "scope": "hosted" if row.scope == tags.OPERATOR else "own",
            "created_at": iso(row.created_at), "finished_at": iso(row.finished_at)}


def _backend(session: Session, account: Account) -> Backend | None:
    return session.scalar(select(Backend).where(Backend.account_id == account.id))


def scope_for(session: Session, account: Account) -> tuple[str, str]:
    """(scope, default region) of the account's images."""
    backend = _backend(session, account)
    if backend is None or backend.kind == "hosted":
        return tags.OPERATOR, backend.region if backend else "us-east-1"
    return account.slug, backend.region


def list_images(session: Session, account: Account, limit: int = 50) -> list[dict[str, Any]]:
    scope, _ = scope_for(session, account)
    rows = session.scalars(select(Image).where(Image.scope == scope)
                           .order_by(Image.id.desc()).limit(limit)).all()
    return [image_view(r) for r in rows]


def may_build(session: Session, account: Account, user: User) -> bool:
    """An own AWS backend's admins build its image; the hosted (operator's) image, shared
    by every hosted account, is built on first use or by a site admin."""
    return user.is_admin or scope_for(session, account)[0] != tags.OPERATOR


def start_build(session: Session, account: Account, region: str | None = None,
                user: User | None = None) -> dict:
    scope, default_region = scope_for(session, account)
    if user is not None and not may_build(session, account, user):
        raise ImageRequestError("The hosted VM image is shared by every hosted account: it is "
                                "built on first use, or by a site admin of this control plane.",
                                status=403)
    try:
        region = check_region(region or default_region)
    except OptionError as exc:
        raise ImageRequestError(str(exc)) from None
    backend = _backend(session, account)
    if scope != tags.OPERATOR and backend is not None and backend.state != "ready":
        raise ImageRequestError(f"Your AWS backend is {backend.state}; wait for its setup to "
                                "finish (or fix it) before building an image.")
    return image_view(request_build(session, account, scope, region))
