"""The dashboard: server-rendered pages in the control plane's own app (no external assets)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from overcast.server.web import account_pages, auth_pages, cluster_pages
from overcast.server.web.session import LoginRequired, login_url, optional_visitor, render

STATIC = Path(__file__).with_name("static")


def install(app: FastAPI) -> None:
    for module in (auth_pages, account_pages, cluster_pages):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired) -> Response:
        if request.method != "GET":  # a stale form after signing out: start again
            return RedirectResponse("/login", 303)
        return RedirectResponse(login_url(exc.next_path), 303)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # The API keeps FastAPI's JSON errors; pages get an HTML page with the same message.
        if request.url.path.startswith("/api/") or request.url.path.startswith("/static/") \
                or request.url.path.endswith((".json", "/events", "-events")):
            return await http_exception_handler(request, exc)
        with request.app.state.db.session() as session:  # keep the nav for signed-in users
            who = optional_visitor(request, session)
        return render(request, "error.html", {"status": exc.status_code, "detail": exc.detail},
                      status=exc.status_code, who=who)
