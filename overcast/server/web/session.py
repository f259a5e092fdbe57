"""Dashboard sessions, CSRF protection, page access checks and rendering.

A session is a random key in an HttpOnly, SameSite=Lax cookie; the database keeps only its
SHA-256, so signing out ends it for real. Every form carries a CSRF token: for signed-in
pages an HMAC of the session key (nothing extra to store), for the sign-in and sign-up forms
a double-submit cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from overcast.server.auth import AccountAccess, account_access, db_session, hash_token
from overcast.store.models import Membership, User, WebSession, utcnow

SESSION_COOKIE = "overcast_session"
CSRF_COOKIE = "overcast_csrf"
SESSION_LIFETIME = timedelta(days=14)
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
PAGE_HEADERS = {
    # Pages show account data: never cache them, never frame them, never leak the URL.
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
}


class LoginRequired(Exception):
    """Raised by page dependencies; the app turns it into a redirect to /login."""

    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


@dataclass
class Visitor:
    user: User
    session_key: str
    memberships: list[Membership] = field(default_factory=list)

    @property
    def csrf(self) -> str:
        return session_csrf(self.session_key)


@dataclass
class Page:
    """A signed-in visitor looking at one of their accounts."""

    visitor: Visitor
    access: AccountAccess

    @property
    def is_admin(self) -> bool:
        return self.access.role == "admin"


def session_csrf(key: str) -> str:
    return hmac.new(key.encode(), b"overcast-csrf", hashlib.sha256).hexdigest()


def start_session(session: Session, user: User) -> str:
    key = secrets.token_urlsafe(32)
    now = utcnow()
    session.execute(delete(WebSession).where(WebSession.expires_at < now))  # tidy as we go
    session.add(WebSession(key_hash=hash_token(key), user_id=user.id, created_at=now,
                           expires_at=now + SESSION_LIFETIME, last_seen_at=now))
    return key


def end_session(session: Session, key: str) -> None:
    session.execute(delete(WebSession).where(WebSession.key_hash == hash_token(key)))


def set_session_cookie(request: Request, response, key: str) -> None:
    response.set_cookie(SESSION_COOKIE, key, max_age=int(SESSION_LIFETIME.total_seconds()),
                        httponly=True, samesite="lax", secure=request.url.scheme == "https",
                        path="/")


def optional_visitor(request: Request, session: Session = Depends(db_session)) -> Visitor | None:
    key = request.cookies.get(SESSION_COOKIE)
    if not key:
        return None
    row = session.scalar(select(WebSession).where(WebSession.key_hash == hash_token(key)))
    if row is None or row.expires_at < utcnow():
        return None
    request.app.state.last_used.web_session(row.id)  # written in batches: reads never write
    memberships = sorted(row.user.memberships, key=lambda m: (m.account.is_team, m.account.slug))
    return Visitor(user=row.user, session_key=key, memberships=memberships)


def stream_account(request: Request, slug: str) -> int:
    """The account id for an event stream, checked like page_member but with a session of
    its own that is closed before streaming: a stream must not hold a pooled connection."""
    with request.app.state.db.session() as session:
        who = optional_visitor(request, session)
        if who is None:
            raise LoginRequired(request.url.path)
        return account_access(slug, who.user, session).account.id


def visitor(request: Request, found: Visitor | None = Depends(optional_visitor)) -> Visitor:
    if found is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(path)
    return found


def page_member(slug: str, who: Visitor = Depends(visitor),
                session: Session = Depends(db_session)) -> Page:
    # The same check as the API: an account the visitor is not in is a 404, not a 403.
    return Page(visitor=who, access=account_access(slug, who.user, session))


def page_admin(page: Page = Depends(page_member)) -> Page:
    if not page.is_admin:
        raise HTTPException(403, f"Only admins of {page.access.account.slug!r} may do this; "
                                 f"ask one of them.")
    return page


async def checked_form(request: Request, who: Visitor = Depends(visitor)) -> dict[str, str]:
    """The posted form, after checking its CSRF token against the session."""
    form = await request.form()
    sent = str(form.get("csrf_token", ""))
    if not hmac.compare_digest(sent, who.csrf) or not same_origin(request):
        raise HTTPException(403, "The form expired or came from another site; reload the "
                                 "page and try again.")
    return {k: str(v) for k, v in form.items() if isinstance(v, str)}


async def anonymous_form(request: Request) -> dict[str, str]:
    """The sign-in/sign-up form, checked with the double-submit cookie."""
    form = await request.form()
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = str(form.get("csrf_token", ""))
    if not cookie or not hmac.compare_digest(sent, cookie) or not same_origin(request):
        raise HTTPException(403, "The form expired; reload the page and try again.")
    return {k: str(v) for k, v in form.items() if isinstance(v, str)}


def same_origin(request: Request) -> bool:
    """Browsers send Origin on POST; when they do it must be this site (defence in depth)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin == f"{request.url.scheme}://{request.url.netloc}"


def safe_next(path: str | None, default: str = "/") -> str:
    """Only local paths: never redirect a signed-in user to another site."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return default
    return path


def login_url(next_path: str) -> str:
    return "/login?next=" + quote(next_path, safe="")


def render(request: Request, name: str, context: dict[str, Any], *, status: int = 200,
           who: Visitor | None = None, page: Page | None = None,
           headers: dict[str, str] | None = None) -> HTMLResponse:
    who = who or (page.visitor if page else None)
    nav_slug = page.access.account.slug if page else next(
        (m.account.slug for m in (who.memberships if who else [])
         if m.account_id == who.user.default_account_id), None)
    ctx = {"visitor": who, "page": page, "csrf": who.csrf if who else None,
           "account": page.access.account if page else None, "nav_slug": nav_slug,
           "role": page.access.role if page else None, **context}
    return TEMPLATES.TemplateResponse(request, name, ctx, status_code=status,
                                      headers={**PAGE_HEADERS, **(headers or {})})


def anonymous_csrf(request: Request) -> str:
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)


def with_csrf_cookie(request: Request, response: HTMLResponse, token: str) -> HTMLResponse:
    if request.cookies.get(CSRF_COOKIE) != token:
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="lax",
                            secure=request.url.scheme == "https", path="/")
    return response
