"""The local cloud's per-instance engine socket, against a stand-in engine on a unix socket:
container creates get the instance's labels (and are refused with host paths), every request
is sent with `Connection: close`, and the answer comes back unchanged."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from overcast.localcloud import engineproxy as ep

pytestmark = pytest.mark.timeout(30)


def fake_engine(path: str, seen: list[bytes]) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length")), 0)
            while len(body) < length:
                body += conn.recv(65536)
            seen.append(head + b"\r\n\r\n" + body)
            reply = b'{"Id": "abc"}'
            conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (len(reply), reply))
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    return server


def request(path: str, raw: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(raw)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def create(body: dict) -> bytes:
    data = json.dumps(body).encode()
    return (b"POST /v1.41/containers/create?name=x HTTP/1.1\r\nHost: docker\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))


def test_creates_are_labelled_or_refused_and_connections_close(tmp_path):
    seen: list[bytes] = []
    engine = fake_engine(str(tmp_path / "engine.sock"), seen)
    proxy = ep.EngineProxy(str(tmp_path / "engine.sock"))
    try:
        sock = str(proxy.open("i-123", {"overcast.localcloud": "cloud1"}))
        answer = request(sock, create({"Image": "x", "HostConfig": {"NetworkMode": "host"}}))
        assert answer.startswith(b"HTTP/1.1 201") and answer.endswith(b'{"Id": "abc"}')
        head, _, body = seen[-1].partition(b"\r\n\r\n")
        labels = json.loads(body)["Labels"]
        assert labels == {"overcast.localcloud": "cloud1", ep.LABEL_HOST: "i-123"}
        assert b"Connection: close" in head and b"keep-alive" not in head.lower()

        refused = request(sock, create({"Image": "x", "HostConfig": {"Binds": ["/:/h"]}}))
        assert refused.startswith(b"HTTP/1.1 403") and b"host paths" in refused
        assert len(seen) == 1  # the engine never saw it

        request(sock, b"GET /v1.41/version HTTP/1.1\r\nHost: docker\r\n"
                      b"Connection: keep-alive\r\n\r\n")
        assert b"Connection: close" in seen[-1] and b"keep-alive" not in seen[-1]
        request(sock, b"POST /v1.41/build?t=reg%2Fenv%3Aabc HTTP/1.1\r\nHost: d\r\n"
                      b"Content-Length: 0\r\n\r\n")
        assert proxy.images() == ["reg/env:abc"]
        proxy.close("i-123")
        with pytest.raises(OSError):
            request(sock, b"GET / HTTP/1.1\r\n\r\n")
    finally:
        proxy.stop()
        engine.close()
