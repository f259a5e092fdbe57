"""Sign in and out, sign up, the user's profile (password, API tokens), and the CLI hand-off."""

from __future__ import annotations

import os
import re

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from overcast.server import bootstrap
from overcast.server.api import tokens as token_api
from overcast.server.auth import authenticate, db_session
from overcast.server.passwords import PasswordError, hash_password, verify_password
from overcast.server.web.session import (
    SESSION_COOKIE,
    Visitor,
    anonymous_csrf,
    anonymous_form,
    checked_form,
    end_session,
    optional_visitor,
    render,
    safe_next,
    set_session_cookie,
    start_session,
    visitor,
    with_csrf_cookie,
)

router = APIRouter(include_in_schema=False)
_STATE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


def signup_open() -> bool:
    """Self sign-up, on unless OVERCAST_SIGNUP=closed (then site admins add users by API)."""
    return os.environ.get("OVERCAST_SIGNUP", "open").lower() != "closed"


def cli_params(port: str | None, state: str | None) -> tuple[int, str] | None:
    """The CLI's loopback port and nonce, if both are well formed."""
    if not port or not state or not port.isdigit() or not _STATE.match(state):
        return None
    number = int(port)
    return (number, state) if 1024 <= number <= 65535 else None


def home_path(who: Visitor) -> str:
    default = next((m.account.slug for m in who.memberships
                    if m.account_id == who.user.default_account_id), None)
    slug = default or (who.memberships[0].account.slug if who.memberships else None)
    return f"/a/{slug}/clusters" if slug else "/profile"


@router.get("/")
def index(who: Visitor | None = Depends(optional_visitor)) -> Response:
    return RedirectResponse(home_path(who) if who else "/login", 303)


def login_page(request: Request, *, error: str | None = None, status: int = 200,
               username: str = "", next_path: str = "/", cli: str = "",
               state: str = "") -> Response:
    token = anonymous_csrf(request)
    response = render(request, "login.html", {
        "csrf": token, "error": error, "username": username, "next": next_path,
        "cli": cli, "state": state, "signup_open": signup_open()}, status=status)
    return with_csrf_cookie(request, response, token)


@router.get("/login")
def login_form(request: Request, next: str = "/", cli: str = "", state: str = "",
               who: Visitor | None = Depends(optional_visitor)) -> Response:
    if who is not None and cli:
        if cli_params(cli, state) is None:
            raise HTTPException(400, "This sign-in link from the CLI is malformed; run "
                                     "`overcast login` again.")
        return render(request, "cli_authorize.html", {"cli": cli, "state": state}, who=who)
    if who is not None:
        return RedirectResponse(safe_next(next, home_path(who)), 303)
    return login_page(request, next_path=safe_next(next), cli=cli, state=state)


@router.post("/login")
def login(request: Request, form: dict = Depends(anonymous_form),
          session: Session = Depends(db_session)) -> Response:
    username, password = form.get("username", "").strip(), form.get("password", "")
    user = authenticate(session, username, password) if username and password else None
    cli, state = form.get("cli", ""), form.get("state", "")
    if user is None:
        return login_page(request, error="Wrong username or password.", status=400,
                          username=username, next_path=safe_next(form.get("next")),
                          cli=cli, state=state)
    key = start_session(session, user)
    session.commit()  # before the redirect: the next request must find the session
    target = f"/login?cli={cli}&state={state}" if cli_params(cli, state) else \
        safe_next(form.get("next"))
    response = RedirectResponse(target, 303)
    set_session_cookie(request, response, key)
    return response


@router.post("/logout")
def logout(form: dict = Depends(checked_form), who: Visitor = Depends(visitor),
           session: Session = Depends(db_session)) -> Response:
    end_session(session, who.session_key)
    session.commit()
    response = RedirectResponse("/login", 303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/signup")
def signup_form(request: Request) -> Response:
    if not signup_open():
        raise HTTPException(404, "Sign-up is closed here; ask the site administrator.")
    token = anonymous_csrf(request)
    return with_csrf_cookie(request, render(request, "signup.html", {"csrf": token}), token)


@router.post("/signup")
def signup(request: Request, form: dict = Depends(anonymous_form),
           session: Session = Depends(db_session)) -> Response:
    if not signup_open():
        raise HTTPException(404, "Sign-up is closed here; ask the site administrator.")
    username, password = form.get("username", "").strip(), form.get("password", "")
    try:
        if password != form.get("confirm", ""):
            raise PasswordError("The two passwords differ.")
        user = bootstrap.create_user(session, bootstrap.check_username(username),
                                     password=password)
    except (bootstrap.AccountError, PasswordError) as exc:
        return render(request, "signup.html", {"csrf": form.get("csrf_token"),
                                               "error": str(exc), "username": username},
                      status=400)
    key = start_session(session, user)
    session.commit()
    response = RedirectResponse("/", 303)
    set_session_cookie(request, response, key)
    return response


@router.post("/cli-login")
def cli_login(request: Request, form: dict = Depends(checked_form),
              who: Visitor = Depends(visitor), session: Session = Depends(db_session)) -> Response:
    """Make a token for the CLI and post it to its loopback port (never to another host)."""
    params = cli_params(form.get("cli"), form.get("state"))
    if params is None:
        raise HTTPException(400, "This sign-in link from the CLI is malformed; run "
                                 "`overcast login` again.")
    port, state = params
    _, secret = token_api.create(session, who.user, "overcast login")
    session.commit()  # the CLI calls the API with it as soon as it arrives
    target = f"http://127.0.0.1:{port}/callback"
    default = next((m.account.slug for m in who.memberships
                    if m.account_id == who.user.default_account_id), "")
    # The page allows posting to that one loopback address only; the script just submits.
    csp = ("default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
           f"form-action {target}")
    return render(request, "cli_handoff.html", {"target": target, "token": secret,
                                                "state": state, "account": default},
                  who=who, headers={"Content-Security-Policy": csp})


@router.get("/profile")
def profile(request: Request, who: Visitor = Depends(visitor),
            session: Session = Depends(db_session)) -> Response:
    return profile_page(request, who, session)


def profile_page(request: Request, who: Visitor, session: Session, **extra) -> Response:
    rows = token_api.user_tokens(session, who.user)
    return render(request, "profile.html", {"tokens": [
        token_api.token_view(r, request.app.state.last_used) for r in rows],
                                            **extra}, who=who,
                  status=400 if extra.get("error") else 200)


@router.post("/profile/tokens")
def new_token(request: Request, form: dict = Depends(checked_form),
              who: Visitor = Depends(visitor), session: Session = Depends(db_session)) -> Response:
    name = (form.get("name") or "dashboard").strip()[:64] or "dashboard"
    row, secret = token_api.create(session, who.user, name)
    # Shown once, on this response only (no-store): the list shows only the prefix.
    return profile_page(request, who, session, new_token=secret, new_token_name=row.name)


@router.post("/profile/tokens/{token_id}/revoke")
def revoke_token(token_id: int, form: dict = Depends(checked_form),
                 who: Visitor = Depends(visitor), session: Session = Depends(db_session)
                 ) -> Response:
    token_api.revoke(session, who.user, token_id)
    session.commit()
    return RedirectResponse("/profile", 303)


@router.post("/profile/password")
def change_password(request: Request, form: dict = Depends(checked_form),
                    who: Visitor = Depends(visitor),
                    session: Session = Depends(db_session)) -> Response:
    user = who.user
    if user.password_hash and not verify_password(user.password_hash, form.get("current", "")):
        return profile_page(request, who, session, error="The current password is wrong.")
    try:
        if form.get("new", "") != form.get("confirm", ""):
            raise PasswordError("The two new passwords differ.")
        user.password_hash = hash_password(form.get("new", ""))
    except PasswordError as exc:
        return profile_page(request, who, session, error=str(exc))
    return profile_page(request, who, session, message="Password changed.")
