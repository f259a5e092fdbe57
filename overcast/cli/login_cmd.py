"""`overcast login`: point this client at a control plane and store an API token.

Either `--token` (made on the dashboard's Profile page), or a browser hand-off: we listen on
a loopback port, open `<server>/login?cli=<port>&state=<nonce>`, and the signed-in page posts
a new token back to that port. The nonce makes sure we accept only the answer to our request.
"""

from __future__ import annotations

import hmac
import html
import secrets
import threading
import webbrowser
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs

import click
import httpx

from overcast.cli import common
from overcast.cli.common import fail, out

DEFAULT_SERVER = "http://127.0.0.1:8600"
HANDOFF_TIMEOUT = 300.0
DONE_PAGE = """<!doctype html><meta charset="utf-8"><title>overcast CLI</title>
<body style="font-family:system-ui;margin:60px auto;max-width:480px;text-align:center">
<h1>{title}</h1><p>{text}</p></body>"""


class Handoff:
    """A one-shot loopback HTTP server that waits for the dashboard to post a token."""

    def __init__(self) -> None:
        self.state = secrets.token_urlsafe(24)
        self.result: dict[str, str] | None = None
        self._done = threading.Event()
        handoff = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length") or 0), 16384)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                ok = (self.path == "/callback" and form.get("token") and
                      hmac.compare_digest(form.get("state", ""), handoff.state))
                if ok:
                    handoff.result = form
                    handoff._done.set()
                title, text = (("Signed in", "The overcast CLI has its token. You can close "
                                             "this window.") if ok else
                               ("Not accepted", "This answer does not match the CLI's request;"
                                                " run `overcast login` again."))
                body = DONE_PAGE.format(title=title, text=html.escape(text)).encode()
                self.send_response(200 if ok else 400)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # keep the terminal quiet
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, server: str) -> str:
        return f"{server}/login?cli={self.port}&state={self.state}"

    def wait(self, timeout: float = HANDOFF_TIMEOUT) -> dict[str, str] | None:
        self._thread.start()
        try:
            self._done.wait(timeout)
        finally:
            self.server.shutdown()
            self.server.server_close()
        return self.result


def whoami(server: str, token: str) -> dict[str, Any]:
    try:
        response = httpx.get(f"{server}/api/v1/me", timeout=10.0,
                             headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        fail(f"Cannot reach the overcast server at {server} ({type(exc).__name__}).",
             common.EXIT_NOT_CONFIGURED)
    if response.status_code == 401:
        fail("The server refused this token: make a new one on the dashboard's Profile page "
             "or run `overcast login` without --token.", common.EXIT_NOT_CONFIGURED)
    if not response.is_success:
        fail(f"The server answered {response.status_code} to /api/v1/me.")
    return response.json()


def default_server() -> str:
    import dask.config

    from overcast.client import config

    config.register_defaults()
    return dask.config.get("overcast.server", None) or common.read_stack().get("server") or \
        DEFAULT_SERVER


@click.command()
@click.option("--server", help="Control plane URL (default: the configured one, or the local).")
@click.option("--token", help="An API token from the dashboard (else: sign in in a browser).")
@click.option("--account", help="Account to use by default (default: your personal account).")
@click.option("--no-browser", is_flag=True, help="Print the sign-in link instead of opening it.")
@click.option("--set-password", is_flag=True,
              help="Set your dashboard password (uses the configured token).")
def login(server: str | None, token: str | None, account: str | None, no_browser: bool,
          set_password: bool) -> None:
    """Sign this client in: writes overcast.server/token/account to the dask config file."""
    from overcast.client import config

    server = (server or default_server()).rstrip("/")
    if set_password:
        _set_password(server)
        return
    if token is None:
        handoff = Handoff()
        link = handoff.url(server)
        # Plain echo: a console might wrap the long link, which must stay copyable.
        click.echo(f"Sign in and approve the CLI at:\n  {link}", err=True)
        if not no_browser:
            webbrowser.open(link)
        answer = handoff.wait()
        if answer is None:
            fail("No answer from the browser within 5 minutes; run `overcast login` again.")
        token = answer["token"]
        account = account or answer.get("account") or None
    me = whoami(server, token)
    slugs = [a["slug"] for a in me.get("accounts", [])]
    account = account or me.get("default_account")
    if account not in slugs:
        fail(f"You are not a member of {account!r}; yours: {', '.join(slugs)}.")
    path = config.write_user_config({"server": server, "token": token, "account": account})
    out.print(f"Signed in to {server} as [bold]{me['username']}[/] (account {account}); "
              f"wrote {path}.")


def _set_password(server: str) -> None:
    import dask.config

    from overcast.client import config

    token = dask.config.get("overcast.token", None)
    if not token:
        fail("No token configured: run `overcast login` (or `overcast up`) first.",
             common.EXIT_NOT_CONFIGURED)
    current = click.prompt("Current password (empty if none)", hide_input=True, default="",
                           show_default=False)
    new = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    response = httpx.put(f"{server}/api/v1/me/password", timeout=30.0,
                         headers={"Authorization": f"Bearer {token}"},
                         json={"current_password": current or None, "new_password": new})
    if not response.is_success:
        fail(response.json().get("detail", f"HTTP {response.status_code}"))
    out.print(f"Password set; sign in at {server}/login. ({config.user_config_path()})")
