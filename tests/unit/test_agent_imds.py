from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from overcast.agent.imds import IMDSClient, IMDSError

TOKEN = "tok-123"
META = {
    "latest/meta-data/instance-id": "i-0abc",
    "latest/meta-data/local-ipv4": "127.10.0.7",
    "latest/meta-data/public-ipv4": "127.10.0.7",
    "latest/meta-data/placement/availability-zone": "us-east-1a",
    "latest/user-data": '{"overcast": 1}',
}


class FakeIMDS(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, prefix: str = "", *, v2: bool = True, meta: dict | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.prefix = prefix  # like the local runner's per-instance "/<instance id>"
        self.v2 = v2
        self.meta = dict(META if meta is None else meta)
        self.requests: list[tuple[str, str, str | None]] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{self.prefix}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeIMDS

    def log_message(self, *args: object) -> None:
        pass

    def _path(self) -> str | None:
        if not self.path.startswith(self.server.prefix + "/"):
            return None
        return self.path[len(self.server.prefix) + 1 :]

    def _send(self, status: int, body: str = "") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self) -> None:
        path = self._path()
        self.server.requests.append(("PUT", path or "", None))
        if not self.server.v2:
            return self._send(405)
        if path == "latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return self._send(200, TOKEN)
        self._send(400)

    def do_GET(self) -> None:
        path = self._path()
        token = self.headers.get("X-aws-ec2-metadata-token")
        self.server.requests.append(("GET", path or "", token))
        if self.server.v2 and token != TOKEN:
            return self._send(401)
        if path in self.server.meta:
            return self._send(200, self.server.meta[path])
        self._send(404)


@pytest.fixture
def imds() -> Iterator[FakeIMDS]:
    server = FakeIMDS("/i-0abc")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_identity_with_token_and_path_prefix(imds: FakeIMDS) -> None:
    ident = IMDSClient(imds.endpoint).identity()
    assert ident.instance_id == "i-0abc"
    assert ident.local_ipv4 == ident.public_ipv4 == "127.10.0.7"
    assert ident.availability_zone == "us-east-1a"
    assert ident.user_data == '{"overcast": 1}'
    # One token, then every GET carries it.
    assert [r for r in imds.requests if r[0] == "PUT"] == [("PUT", "latest/api/token", None)]
    assert all(token == TOKEN for method, _, token in imds.requests if method == "GET")


def test_endpoint_from_botocore_env(imds: FakeIMDS, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint + "/")
    client = IMDSClient()
    assert client.base == imds.endpoint + "/"
    assert client.meta("instance-id") == "i-0abc"


def test_no_public_ip_is_none(imds: FakeIMDS) -> None:
    del imds.meta["latest/meta-data/public-ipv4"]
    assert IMDSClient(imds.endpoint).identity().public_ipv4 is None


def test_missing_required_item_is_an_error(imds: FakeIMDS) -> None:
    del imds.meta["latest/meta-data/instance-id"]
    with pytest.raises(IMDSError, match="instance-id"):
        IMDSClient(imds.endpoint).identity()


def test_imdsv1_fallback(imds: FakeIMDS) -> None:
    imds.v2 = False
    assert IMDSClient(imds.endpoint).meta("instance-id") == "i-0abc"
    assert all(token is None for method, _, token in imds.requests if method == "GET")


def test_expired_token_is_renewed(imds: FakeIMDS) -> None:
    client = IMDSClient(imds.endpoint)
    assert client.meta("instance-id") == "i-0abc"
    client._token = "expired"
    assert client.meta("local-ipv4") == "127.10.0.7"
    assert client._token == TOKEN


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_retries_until_the_service_is_up() -> None:
    port = _free_port()
    server_box: list[FakeIMDS] = []

    def late_start() -> None:
        time.sleep(0.3)
        server = FakeIMDS()
        server.server_close()
        # Re-bind on the port the client is already trying.
        server.server_address = ("127.0.0.1", port)
        server.socket = socket.socket()
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.server_bind()
        server.server_activate()
        server_box.append(server)
        server.serve_forever(0.05)

    threading.Thread(target=late_start, daemon=True).start()
    try:
        client = IMDSClient(f"http://127.0.0.1:{port}", retry_for=5)
        assert client.meta("instance-id") == "i-0abc"
    finally:
        for s in server_box:
            s.shutdown()
            s.server_close()


def test_gives_up_after_retry_for() -> None:
    start = time.monotonic()
    with pytest.raises(IMDSError):
        IMDSClient(f"http://127.0.0.1:{_free_port()}", retry_for=0.3).meta("instance-id")
    assert time.monotonic() - start < 3
