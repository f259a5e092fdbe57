"""The dashboard's gate in front of a real tornado HTTPS server on loopback: token -> cookie,
no credential -> 403 (websocket upgrades included), and no token in tornado's logs."""

from __future__ import annotations

import asyncio
import logging
import ssl
from ipaddress import ip_address

import pytest
from tornado import httpclient, web, websocket
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from overcast.agent import dashboard_gate
from overcast.dashboardcred import COOKIE, dashboard_token, link_with_token, redact
from overcast.security import generate_cluster_tls, issue_dashboard_cert

pytestmark = pytest.mark.timeout(30)
TLS = generate_cluster_tls("gate")
# What the control plane issues to a scheduler at 127.0.0.1 (POST .../dashboard-cert).
CERT, KEY = issue_dashboard_cert(TLS.ca_cert, TLS.ca_key, "gate", [ip_address("127.0.0.1")])
TOKEN = dashboard_token("cluster-token")


class Page(web.RequestHandler):
    def get(self) -> None:
        self.write("<html>Bokeh page</html>")


class Echo(websocket.WebSocketHandler):
    def on_message(self, message: str) -> None:
        self.write_message(message)


def client_ssl() -> ssl.SSLContext:
    """Trusts the cluster's CA only, and checks that the certificate names 127.0.0.1."""
    return ssl.create_default_context(cadata=TLS.ca_cert)


async def serve() -> tuple[HTTPServer, str]:
    """The gate on a tornado app, as install() puts it on a scheduler's HTTP server."""
    app = web.Application([(r"/status", Page), (r"/status/ws", Echo)])
    with dashboard_gate.https_config(CERT, KEY):
        import dask
        ctx = ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(dask.config.get("distributed.scheduler.dashboard.tls.cert"),
                            dask.config.get("distributed.scheduler.dashboard.tls.key"))
    server = HTTPServer(dashboard_gate.DashboardGate(app, TOKEN), ssl_options=ctx)
    sockets = bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    return server, f"https://127.0.0.1:{sockets[0].getsockname()[1]}"


async def fetch(url: str, **kwargs) -> httpclient.HTTPResponse:
    return await httpclient.AsyncHTTPClient().fetch(
        url, ssl_options=client_ssl(), raise_error=False, follow_redirects=False, **kwargs)


def test_token_is_traded_for_a_cookie_and_nothing_else_gets_in(caplog):
    async def main() -> None:
        server, base = await serve()
        try:
            refused = await fetch(f"{base}/status")
            assert refused.code == 403 and b"needs its credential" in refused.body
            assert (await fetch(f"{base}/status?token=x{TOKEN}")).code == 403
            trade = await fetch(link_with_token(f"{base}/status?theme=dark", TOKEN))
            assert trade.code == 302 and trade.headers["Location"] == "/status?theme=dark"
            cookie = trade.headers["Set-Cookie"]
            assert cookie.startswith(f"{COOKIE}={TOKEN};") and "Secure" in cookie
            page = await fetch(f"{base}/status", headers={"Cookie": f"{COOKIE}={TOKEN}"})
            assert page.code == 200 and b"Bokeh page" in page.body
            bearer = await fetch(f"{base}/status", headers={"Authorization": f"Bearer {TOKEN}"})
            assert bearer.code == 200
            # No open redirect through a "//host" path.
            trade = await fetch(f"{base}//evil.example/status?token={TOKEN}")
            assert trade.headers["Location"].startswith("/evil.example")
        finally:
            server.stop()

    dashboard_gate.install_log_filters()
    with caplog.at_level(logging.INFO, logger="tornado.access"):
        asyncio.run(main())
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "token=[redacted]" in text and TOKEN not in text


def test_websockets_need_the_cookie_too():
    async def main() -> None:
        server, base = await serve()
        ws_url = base.replace("https://", "wss://") + "/status/ws"
        try:
            with pytest.raises(httpclient.HTTPClientError) as refused:
                await websocket.websocket_connect(
                    httpclient.HTTPRequest(ws_url, ssl_options=client_ssl()))
            assert refused.value.code == 403
            conn = await websocket.websocket_connect(httpclient.HTTPRequest(
                ws_url, ssl_options=client_ssl(), headers={"Cookie": f"{COOKIE}={TOKEN}"}))
            await conn.write_message("ping")
            assert await conn.read_message() == "ping"
            conn.close()
        finally:
            server.stop()

    asyncio.run(main())


def test_plain_http_is_not_served():
    async def main() -> None:
        server, base = await serve()
        try:
            with pytest.raises(OSError):  # the TLS server drops a plain-HTTP request
                await httpclient.AsyncHTTPClient().fetch(
                    base.replace("https://", "http://") + f"/status?token={TOKEN}",
                    raise_error=False, request_timeout=5)
        finally:
            server.stop()

    asyncio.run(main())


def test_https_config_files_are_private_and_gone_afterwards():
    import os

    import dask
    with dashboard_gate.https_config(TLS.node_cert, TLS.node_key):
        path = dask.config.get("distributed.scheduler.dashboard.tls.key")
        assert os.stat(path).st_mode & 0o077 == 0
        assert os.stat(os.path.dirname(path)).st_mode & 0o077 == 0
    assert not os.path.exists(path)
    assert dask.config.get("distributed.scheduler.dashboard.tls.key", None) != path


def test_token_derivation_and_links():
    assert dashboard_token("a") == dashboard_token("a") != dashboard_token("b")
    cluster_token = "s3cret-cluster-token"
    assert cluster_token not in dashboard_token(cluster_token)
    assert len(dashboard_token(cluster_token)) == 43
    assert link_with_token("https://h:8787/status", "T") == "https://h:8787/status?token=T"
    assert link_with_token("https://h/s?x=1", "T") == "https://h/s?x=1&token=T"
    assert (redact("GET /status?token=abc&x=1 (1.2.3.4)")
            == "GET /status?token=[redacted]&x=1 (1.2.3.4)")


def test_the_node_certificate_alone_fails_a_hostname_check():
    async def main() -> None:
        app = web.Application([(r"/status", Page)])
        ctx = ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH)
        with dashboard_gate.https_config(TLS.node_cert, TLS.node_key):
            import dask
            ctx.load_cert_chain(dask.config.get("distributed.scheduler.dashboard.tls.cert"),
                                dask.config.get("distributed.scheduler.dashboard.tls.key"))
        server = HTTPServer(app, ssl_options=ctx)
        sockets = bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        try:
            with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
                await fetch(f"https://127.0.0.1:{sockets[0].getsockname()[1]}/status")
        finally:
            server.stop()

    asyncio.run(main())
