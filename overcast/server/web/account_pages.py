"""The Account page: cloud backend card, the backend wizard, reset, policies, team members."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from overcast.options import DEFAULT_REGION, SUPPORTED_REGIONS
from overcast.server import bootstrap
from overcast.server.api.accounts import members_view
from overcast.server.auth import db_session
from overcast.server.services import backend as service
from overcast.server.services import images as image_service
from overcast.server.views import backend_view
from overcast.server.web.session import (
    Page,
    Visitor,
    checked_form,
    page_admin,
    page_member,
    render,
    visitor,
)

router = APIRouter(include_in_schema=False)
POLICY_NAMES = ("setup", "ongoing")
# Form fields of the wizard that may be shown again after an error (never the secrets).
ECHO_FIELDS = ("kind", "region", "aws_access_key_id", "registry_type", "registry_username")


def policy_text(name: str) -> str:
    return json.dumps(service.policy_documents()[name], indent=2)


def current_backend(session: Session, page: Page) -> dict[str, Any]:
    account = page.access.account
    row = service.get_backend(session, account)
    view = backend_view(row, service.backend_resources(session, account, row))
    view["s3_read"] = list(row.s3_read or []) if row is not None else []
    return view


def account_context(session: Session, page: Page, **extra: Any) -> dict[str, Any]:
    return {"backend": current_backend(session, page), "members": members_view(page.access.account),
            "policies": {name: policy_text(name) for name in POLICY_NAMES},
            "images": image_service.list_images(session, page.access.account, limit=5),
            "may_build_image": image_service.may_build(session, page.access.account,
                                                       page.access.user), **extra}


def wake(request: Request) -> None:
    reconciler = getattr(request.app.state, "reconciler", None)
    if reconciler is not None:
        reconciler.wake()


@router.get("/a/{slug}/account")
def account_page(request: Request, page: Page = Depends(page_member),
                 session: Session = Depends(db_session)) -> Response:
    return render(request, "account.html", account_context(session, page), page=page)


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
    if form.get("kind") != "aws":
        return {"backend": "hosted"}
    params: dict[str, Any] = {
        "backend": "aws", "aws_region": form.get("region") or DEFAULT_REGION,
        "aws_access_key_id": form.get("aws_access_key_id", ""),
        "aws_secret_access_key": form.get("aws_secret_access_key", ""),
        "registry_type": form.get("registry_type") or "ecr"}
    if params["registry_type"] == "docker_hub":
        params["registry_username"] = form.get("registry_username", "")
        params["registry_access_token"] = form.get("registry_access_token", "")
    return params


@router.post("/a/{slug}/backend")
def submit_backend(request: Request, form: dict = Depends(checked_form),
                   page: Page = Depends(page_admin),
                   session: Session = Depends(db_session)) -> Response:
    values = {k: form.get(k, "") for k in ECHO_FIELDS}
    try:
        service.configure_backend(session, page.access.account, backend_params(form))
    except service.BackendConfigError as exc:
        session.rollback()  # nothing half-made: the service's message says what to change
        return wizard_page(request, page, values, error=exc.message)
    session.commit()
    wake(request)
    return RedirectResponse(f"/a/{page.access.account.slug}/backend/progress", 303)


@router.post("/a/{slug}/images")
def build_image(request: Request, form: dict = Depends(checked_form),
                page: Page = Depends(page_admin),
                session: Session = Depends(db_session)) -> Response:
    """Start a VM image build (the same service as `overcast image build`)."""
    try:
        image_service.start_build(session, page.access.account, user=page.access.user)
    except image_service.ImageRequestError as exc:
        session.rollback()
        return render(request, "account.html",
                      account_context(session, page, image_error=str(exc)), page=page,
                      status=exc.status)
    wake(request)
    return RedirectResponse(f"/a/{page.access.account.slug}/account#images", 303)


@router.get("/a/{slug}/backend/progress")
def progress(request: Request, page: Page = Depends(page_member),
             session: Session = Depends(db_session)) -> Response:
    return render(request, "progress.html", {"backend": current_backend(session, page)},
                  page=page)


@router.post("/a/{slug}/backend/reset")
def reset_backend(request: Request, form: dict = Depends(checked_form),
                  page: Page = Depends(page_admin),
                  session: Session = Depends(db_session)) -> Response:
    try:
        service.reset_backend(session, page.access.account)
    except service.BackendConfigError as exc:
        session.rollback()
        return render(request, "account.html",
                      account_context(session, page, backend_error=exc.message),
                      page=page, status=exc.status)
    session.commit()
    wake(request)
    return RedirectResponse(f"/a/{page.access.account.slug}/account", 303)


@router.post("/a/{slug}/backend/s3-read")
def set_s3_read(request: Request, form: dict = Depends(checked_form),
                page: Page = Depends(page_admin),
                session: Session = Depends(db_session)) -> Response:
    """The buckets this account's clusters may read: one name per line (or comma-separated)."""
    text = form.get("s3_read", "")
    buckets = [b for b in text.replace(",", "\n").split() if b]
    try:
        service.set_s3_read(session, page.access.account, buckets)
    except service.BackendConfigError as exc:
        session.rollback()
        return render(request, "account.html",
                      account_context(session, page, s3_read_error=exc.message),
                      page=page, status=exc.status)
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
        return render(request, "account.html",
                      account_context(session, page, member_error=str(exc)),
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
