"""The Account page: cloud backend card, the backend wizard, reset, policies, team members."""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from overcast.options import DEFAULT_REGION, SUPPORTED_REGIONS
from overcast.server import bootstrap
from overcast.server.api.accounts import members_view
from overcast.server.auth import db_session
from overcast.server.views import backend_view
from overcast.server.web.session import (
    Page, Visitor, checked_form, page_admin, page_member, render, visitor)
from overcast.store.models import Backend, BackendResource

router = APIRouter(include_in_schema=False)
POLICY_NAMES = ("setup", "ongoing")
# Form fields of the wizard that may be shown again after an error (never the secrets).
ECHO_FIELDS = ("kind", "region", "aws_access_key_id", "registry_type", "registry_username",
               "registry_namespace")
SECRET_FIELDS = ("aws_secret_access_key", "registry_password")


def backend_service() -> ModuleType | None:
    """The backend service layer (configure/reset/policies), if this build has it."""
    try:
        from overcast.server.services import backend as service
    except ModuleNotFoundError as exc:
        if exc.name not in ("overcast.server.services", "overcast.server.services.backend"):
            raise
        return None
    return service


def policy_text(name: str) -> str:
    service = backend_service()
    if service is not None and hasattr(service, "policy_documents"):
        docs = service.policy_documents()
        doc = docs.get(name) if isinstance(docs, dict) else None
        if doc is not None:
            return doc if isinstance(doc, str) else json.dumps(doc, indent=2)
    from overcast.backends.aws import policies
    return policies.text(name)


def current_backend(session: Session, page: Page) -> dict[str, Any]:
    account = page.access.account
    row = session.scalar(select(Backend).where(Backend.account_id == account.id))
    resources = list(session.scalars(select(BackendResource)
                                     .where(BackendResource.account_id == account.id)
                                     .order_by(BackendResource.id)))
    return backend_view(row, resources)


def wake(request: Request) -> None:
    reconciler = getattr(request.app.state, "reconciler", None)
    if reconciler is not None:
        reconciler.wake()


@router.get("/a/{slug}/account")
def account_page(request: Request, page: Page = Depends(page_member),
                 session: Session = Depends(db_session)) -> Response:
    return render(request, "account.html", {
        "backend": current_backend(session, page), "members": members_view(page.access.account),
        "policies": {name: policy_text(name) for name in POLICY_NAMES}}, page=page)


@router.get("/a/{slug}/backend/edit")
def wizard(request: Request, page: Page = Depends(page_admin),
           session: Session = Depends(db_session)) -> Response:
    backend = current_backend(session, page)
    values = {"kind": "aws", "region": backend["region"] or DEFAULT_REGION,
              "registry_type": backend["registry_type"] or "ecr",
              "registry_username": backend["registry_username"] or ""}
    return wizard_page(request, page, values)


def wizard_page(request: Request, page: Page, values: dict[str, str],
                error: str | None = None) -> Response:
    return render(request, "wizard.html", {"values": values, "error": error,
                                           "regions": SUPPORTED_REGIONS},
                  page=page, status=400 if error else 200)


def backend_params(form: dict[str, str]) -> dict[str, Any]:
    """The wizard's form as the backend service's parameters."""
    kind = "aws" if form.get("kind") == "aws" else "hosted"
    params: dict[str, Any] = {"kind": kind, "region": form.get("region") or DEFAULT_REGION,
                              "registry_type": form.get("registry_type") or "ecr"}
    if kind == "aws":
        params["aws_access_key_id"] = form.get("aws_access_key_id", "").strip()
        params["aws_secret_access_key"] = form.get("aws_secret_access_key", "").strip()
    if params["registry_type"] == "dockerhub":
        params["registry_username"] = form.get("registry_username", "").strip()
        params["registry_namespace"] = form.get("registry_namespace", "").strip() or \
            params["registry_username"]
        params["registry_password"] = form.get("registry_password", "")
    return params


@router.post("/a/{slug}/backend")
def submit_backend(request: Request, form: dict = Depends(checked_form),
                   page: Page = Depends(page_admin),
                   session: Session = Depends(db_session)) -> Response:
    values = {k: form.get(k, "") for k in ECHO_FIELDS}
    service = backend_service()
    if service is None:
        return wizard_page(request, page, values, error="Configuring a cloud backend is not "
                                                        "available in this build of overcast.")
    try:
        service.configure_backend(session, page.access.account, backend_params(form))
    except service.BackendConfigError as exc:
        session.rollback()  # nothing half-made: the service's message says what to change
        return wizard_page(request, page, values, error=str(exc))
    session.commit()
    wake(request)
    return RedirectResponse(f"/a/{page.access.account.slug}/backend/progress", 303)


@router.get("/a/{slug}/backend/progress")
def progress(request: Request, page: Page = Depends(page_member),
             session: Session = Depends(db_session)) -> Response:
    return render(request, "progress.html", {"backend": current_backend(session, page)},
                  page=page)


@router.post("/a/{slug}/backend/reset")
def reset_backend(request: Request, form: dict = Depends(checked_form),
                  page: Page = Depends(page_admin),
                  session: Session = Depends(db_session)) -> Response:
    service = backend_service()
    if service is None:
        raise HTTPException(501, "Resetting the cloud backend is not available in this build.")
    service.reset_backend(session, page.access.account)
    session.commit()
    wake(request)
    return RedirectResponse(f"/a/{page.access.account.slug}/account", 303)


@router.get("/policies/{name}.json")
def policy(name: str, download: bool = False, who: Visitor = Depends(visitor)) -> Response:
    if name not in POLICY_NAMES:
        raise HTTPException(404, f"No policy {name!r}: choose setup or ongoing.")
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    if download:
        headers["Content-Disposition"] = f'attachment; filename="overcast-{name}-policy.json"'
    return PlainTextResponse(policy_text(name), media_type="application/json", headers=headers)


@router.get("/teams/new")
def team_form(request: Request, who: Visitor = Depends(visitor)) -> Response:
    return render(request, "team_new.html", {}, who=who)


@router.post("/teams")
def create_team(request: Request, form: dict = Depends(checked_form),
                who: Visitor = Depends(visitor), session: Session = Depends(db_session)
                ) -> Response:
    try:
        team = bootstrap.create_team(session, who.user, form.get("name", ""))
    except bootstrap.AccountError as exc:
        return render(request, "team_new.html", {"error": str(exc),
                                                 "name": form.get("name", "")},
                      who=who, status=400)
    session.commit()
    return RedirectResponse(f"/a/{team.slug}/account", 303)


@router.post("/a/{slug}/members")
def add_member(request: Request, form: dict = Depends(checked_form),
               page: Page = Depends(page_admin), session: Session = Depends(db_session)
               ) -> Response:
    try:
        bootstrap.add_member(session, page.access.account, form.get("username", ""),
                             form.get("role", "member"))
    except bootstrap.AccountError as exc:
        session.rollback()
        return render(request, "account.html", {
            "backend": current_backend(session, page), "member_error": str(exc),
            "members": members_view(page.access.account),
            "policies": {name: policy_text(name) for name in POLICY_NAMES}},
            page=page, status=400)
    session.commit()
    return RedirectResponse(f"/a/{page.access.account.slug}/account#members", 303)


@router.post("/a/{slug}/members/{username}/remove")
def remove_member(username: str, form: dict = Depends(checked_form),
                  page: Page = Depends(page_admin), session: Session = Depends(db_session)
                  ) -> Response:
    try:
        bootstrap.remove_member(session, page.access.account, username)
    except bootstrap.AccountError as exc:
        raise HTTPException(400, str(exc)) from None
    session.commit()
    return RedirectResponse(f"/a/{page.access.account.slug}/account#members", 303)
