"""Backend routes: the IAM policy documents, and an account's cloud backend.

GET for members; PUT (configure), DELETE (reset to the hosted default), teardown and the
role-mode details for admins. Credentials go in, never out: only a masked key id is shown.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from sqlalchemy.orm import Session

from overcast.backends import provider_for
from overcast.backends.base import ProviderError
from overcast.server.api.clusters import wake
from overcast.server.auth import AccountAccess, admin_of, db_session, member_of
from overcast.server.services import backend as service
from overcast.server.views import backend_view
from overcast.store.models import Account

router = APIRouter(tags=["backend"])
BACKEND = "/accounts/{slug}/backend"
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def backend_document(session: Session, account: Account) -> dict[str, Any]:
    row = service.get_backend(session, account)
    view = backend_view(row, service.backend_resources(session, account, row))
    view["role_arn"] = row.role_arn if row is not None and row.kind == "aws" else None
    view["credentials"] = (None if row is None or row.kind != "aws"
                           else "role" if row.role_arn else "keys")
    view["s3_read"] = list(row.s3_read or []) if row is not None else []
    return view


@router.get("/policies/{name}")
def get_policy(name: str, account: str | None = None) -> dict:
    """The setup or ongoing IAM policy document, as JSON, scoped to this control plane's
    deployment id (and, with `account`, iam:PassRole to that account's instance role)."""
    if account is not None and not _SLUG.match(account):
        raise HTTPException(422, "account must be an account slug (lowercase letters, digits "
                                 "and dashes).")
    documents = service.policy_documents(account)
    if name not in documents:
        raise HTTPException(404, f"No policy {name!r}: use one of {', '.join(documents)}.")
    return documents[name]


@router.get(BACKEND)
def get_backend(access: AccountAccess = Depends(member_of),
                session: Session = Depends(db_session)) -> dict:
    return backend_document(session, access.account)


def _change(request: Request, session: Session, account: Account, action, *args) -> dict:
    """Run one service action; a refused one stores nothing and answers its 4xx message."""
    try:
        action(session, account, *args)
    except service.BackendConfigError as exc:
        session.rollback()
        raise HTTPException(exc.status, exc.message) from None
    session.commit()
    wake(request)
    return backend_document(session, account)


@router.put(BACKEND)
def put_backend(request: Request, params: dict[str, Any] = Body(...),
                access: AccountAccess = Depends(admin_of),
                session: Session = Depends(db_session)) -> dict:
    """Configure the backend (checks the credentials first; nothing is stored if one fails)."""
    return _change(request, session, access.account, service.configure_backend, params)


@router.delete(BACKEND)
def reset_backend(request: Request, access: AccountAccess = Depends(admin_of),
                  session: Session = Depends(db_session)) -> dict:
    """Back to the hosted default (resources in the customer's account are left alone)."""
    return _change(request, session, access.account, service.reset_backend)


@router.post(BACKEND + "/teardown", status_code=202)
def teardown_backend(request: Request, access: AccountAccess = Depends(admin_of),
                     session: Session = Depends(db_session)) -> dict:
    """Delete everything overcast made in the customer's account, then reset to hosted."""
    return _change(request, session, access.account, service.request_teardown)


@router.get(BACKEND + "/role-setup")
def role_setup(request: Request, access: AccountAccess = Depends(admin_of),
               session: Session = Depends(db_session)) -> dict:
    """What a cross-account role for this account must look like (role mode)."""
    ext = service.external_id(session, access.account)
    session.commit()
    contexts = request.app.state.log_reader.contexts
    try:
        trusted = provider_for("aws").account_id(contexts.operator("us-east-1"))
    except ProviderError as exc:
        raise HTTPException(502, f"Could not read the control plane's AWS account: {exc}") \
            from None
    setup = provider_for("aws").role_setup(access.account.slug, trusted, ext)
    return {"external_id": ext, "trusted_account_id": trusted,
            "role_name": setup.role_name, "trust_policy": setup.trust_policy,
            "policies": list(service.policy_documents()),
            "policy_documents": service.policy_documents(access.account.slug)}
