"""The scheduler's dask dashboard behind HTTPS (the cluster's node certificate) and a token.

Why a token on the scheduler rather than a proxy through the control plane: bokeh keeps a
websocket open per dashboard tab and streams plot updates over it; proxying those through the
control plane would put every user's dashboard traffic (and its websockets) on the one API
process, and break when the control plane restarts. With a token the dashboard stays a direct
connection, as dask's own, and the control plane only hands out the link.

The link carries `?token=...` once: a valid token is traded for an HttpOnly, Secure cookie and a
redirect to the same page without the token (as Jupyter does), so the page, its assets and its
websocket all authenticate by cookie. Anything without the cookie (or `Authorization: Bearer`)
is answered 403. Access-log lines have any `token=` redacted before they reach a handler (the
agent ships its logs to CloudWatch).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode

import dask
from tornado import httputil, web
from tornado.routing import Router

from overcast.dashboardcred import COOKIE, QUERY_PARAM, redact, tokens_equal

TORNADO_LOGGERS = ("tornado.access", "tornado.application", "tornado.general")
REFUSED = ("This dask dashboard needs its credential: open the link from "
           "overcast.Cluster(...).dashboard_link or the cluster's page on the control plane.")


@contextlib.contextmanager
def https_config(cert_pem: str, key_pem: str) -> Iterator[None]:
    """dask config that makes the HTTP server of a Scheduler built inside it serve HTTPS.

    distributed reads the dashboard's certificate and key from files (Python's ssl loads a chain
    only from files) while the Scheduler is constructed; they live in a private directory (mode
    0700, files 0600) for that moment only.
    """
    tmp = tempfile.mkdtemp(prefix="overcast-dashboard-")
    try:
        paths = {}
        for name, pem in (("cert", cert_pem), ("key", key_pem)):
            paths[name] = os.path.join(tmp, f"{name}.pem")
            fd = os.open(paths[name], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(pem)
        with dask.config.set({"distributed.scheduler.dashboard.tls.cert": paths["cert"],
                              "distributed.scheduler.dashboard.tls.key": paths["key"]}):
            yield
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Refused(web.RequestHandler):
    def prepare(self) -> None:
        self.set_status(403)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(REFUSED)


class _TradeForCookie(web.RequestHandler):
    """`GET /page?token=T` -> cookie, then 302 to `/page` without the token."""

    def initialize(self, token: str) -> None:
        self._token = token

    def get(self) -> None:
        self.set_cookie(COOKIE, self._token, path="/", secure=True, httponly=True,
                        samesite="Lax")
        rest = urlencode([(k, v) for k, v in parse_qsl(self.request.query, keep_blank_values=True)
                          if k != QUERY_PARAM])
        path = "/" + self.request.path.lstrip("/")  # never "//host": no open redirect
        self.redirect(path + (f"?{rest}" if rest else ""))

    head = get


def _query_token(request: httputil.HTTPServerRequest) -> str | None:
    values = request.query_arguments.get(QUERY_PARAM)
    return values[-1].decode(errors="replace") if values else None


def _cookie_token(request: httputil.HTTPServerRequest) -> str | None:
    try:
        morsel = request.cookies.get(COOKIE)
    except Exception:  # noqa: BLE001 - a malformed Cookie header is just no cookie
        return None
    return morsel.value if morsel else None


def _bearer_token(request: httputil.HTTPServerRequest) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


class DashboardGate(Router):
    """Sits between the HTTP server and distributed's routing application."""

    def __init__(self, app: web.Application, token: str) -> None:
        self.app = app
        self.token = token

    def find_handler(self, request: httputil.HTTPServerRequest, **kwargs: Any) -> Any:
        if tokens_equal(_query_token(request), self.token):
            upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
            if request.method in ("GET", "HEAD") and not upgrade:
                return self.app.get_handler_delegate(request, _TradeForCookie,
                                                     {"token": self.token})
            return self.app.find_handler(request, **kwargs)
        if (tokens_equal(_cookie_token(request), self.token)
                or tokens_equal(_bearer_token(request), self.token)):
            return self.app.find_handler(request, **kwargs)
        return self.app.get_handler_delegate(request, _Refused)


class RedactTokens(logging.Filter):
    """Scrubs `token=...` from tornado's records (its access log and errors show the URI)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted_arg(a) for a in record.args)
        return True


def _redacted_arg(arg: Any) -> Any:
    if isinstance(arg, (int, float)):
        return arg  # keeps %d / %.2f formatting working
    text = str(arg)
    return redact(text) if "token=" in text else arg


def install(scheduler: Any, token: str) -> None:
    """Put the gate in front of a just-constructed scheduler's HTTP server (before its event loop
    has served a single request)."""
    scheduler.http_server.request_callback = DashboardGate(scheduler.http_application, token)
    install_log_filters()


def install_log_filters() -> None:
    for name in TORNADO_LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in log.filters):
            log.addFilter(RedactTokens())
