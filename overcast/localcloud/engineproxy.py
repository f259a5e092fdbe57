"""A VM's own container engine, for instance containers: a per-instance socket to the machine's.

A VM image with a container runtime (the overcast image: Debian's docker.io) gives its VM an
engine of its own at /var/run/docker.sock. An instance container cannot run a second dockerd
here, so each such instance gets a socket of its own, served by this proxy and bind-mounted at
/run/docker.sock: the instance's `docker` commands (build, import, push, pull, run) go to the
machine's engine, and their containers are siblings of the instance. The proxy keeps what a VM
would not have out of reach, and cleans up after the instance:

- `POST /containers/create` is read and checked: host paths (binds, bind/volume mounts,
  volumes-from), privileged mode, added capabilities, devices and GPU requests, host PID/IPC/
  UTS/user namespaces and security options are refused with a 403 saying so (a VM's engine
  would mount the *VM's* files; here they would be the machine's). Each container gets the
  local cloud's labels and `overcast.instance.host=<instance id>`: it is removed with its
  instance (terminate or stop) and with the local cloud.
- `POST /volumes/create` is refused (a local-driver volume can bind any host path).
- Images an instance builds, imports, tags or pulls are noted and removed when the local
  cloud stops (instances of one local cloud share the engine's image store meanwhile).
- Every other request passes unchanged. One request per connection: the proxy asks the
  engine to close the connection after answering (`Connection: close`), so no second request
  can slip past the check on a kept-alive connection; upgraded connections (attach, exec)
  are piped as they are.

Not checked (docs/local-cloud.md): which containers an instance inspects, stops or execs into
(a VM's engine sees only its own), CPU/memory limits, and disk use of the image store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("overcast.localcloud.engineproxy")

LABEL_HOST = "overcast.instance.host"
IN_CONTAINER = "/run/docker.sock"
MAX_HEAD = 64 * 1024
MAX_BODY = 4 * 1024 * 1024
_CREATE = re.compile(r"^(/v[\d.]+)?/containers/create$")
_VOLUME = re.compile(r"^(/v[\d.]+)?/volumes/create$")
_BUILD = re.compile(r"^(/v[\d.]+)?/build$")
_IMAGES_CREATE = re.compile(r"^(/v[\d.]+)?/images/create$")
_TAG = re.compile(r"^(/v[\d.]+)?/images/(.+)/tag$")


def engine_socket() -> str | None:
    """The machine engine's unix socket (DOCKER_HOST or the default), None for a TCP one."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return host[len("unix://"):] if host.startswith("unix://") else None


def refusal(config: dict) -> str | None:
    """Why a container create must be refused (None: it may run)."""
    host = config.get("HostConfig") or {}
    mounts = [m for m in host.get("Mounts") or [] if m.get("Type") != "tmpfs"]
    checks = [
        (host.get("Binds") or mounts or host.get("VolumesFrom"),
         "host paths and volumes (-v, --mount, --volumes-from)"),
        (host.get("Privileged"), "--privileged"),
        (host.get("CapAdd"), "--cap-add"),
        (host.get("Devices"), "--device"),
        (host.get("DeviceRequests"), "--gpus (there is no GPU in the local cloud)"),
        (any(host.get(k) == "host" for k in ("PidMode", "IpcMode", "UTSMode", "UsernsMode")),
         "the host's PID/IPC/UTS/user namespaces"),
        (host.get("SecurityOpt"), "--security-opt"),
    ]
    for bad, what in checks:
        if bad:
            return (f"the local cloud's instance engine does not allow {what}: an instance may "
                    f"not reach the machine's files or devices (docs/local-cloud.md)")
    return None


def images_named(method: str, path: str, query: str) -> list[str]:
    """Image references a request makes on the engine (built, imported, pulled, tagged)."""
    if method != "POST":
        return []
    q = {k: v[-1] for k, v in parse_qs(query).items()}
    if _BUILD.match(path):
        return parse_qs(query).get("t", [])
    if _IMAGES_CREATE.match(path):
        name = q.get("fromImage") or q.get("repo")
        return [f"{name}:{q['tag']}" if q.get("tag") else name] if name else []
    if _TAG.match(path) and q.get("repo"):
        return [f"{q['repo']}:{q.get('tag') or 'latest'}"]
    return []


class _Request:
    def __init__(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        self.method, self.target, self.version = lines[0].split(" ", 2)
        self.headers = [tuple(h.split(":", 1)) for h in lines[1:] if ":" in h]
        parts = urlsplit(self.target)
        self.path, self.query = parts.path, parts.query

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.strip().lower() == name.lower():
                return v.strip()
        return None

    def render(self, body: bytes | None, close: bool) -> bytes:
        drop = {"connection"} | ({"content-length", "transfer-encoding"} if body is not None
                                 else set())
        headers = [(k, v) for k, v in self.headers if k.strip().lower() not in drop]
        if body is not None:
            headers.append(("Content-Length", f" {len(body)}"))
        if close:
            headers.append(("Connection", " close"))
        elif self.header("Connection"):
            headers.append(("Connection", " " + (self.header("Connection") or "")))
        lines = [f"{self.method} {self.target} {self.version}"] + [f"{k}:{v}" for k, v in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class InstanceEngine:
    """One instance's socket, served until `close`."""

    def __init__(self, proxy: EngineProxy, instance_id: str, labels: dict[str, str]) -> None:
        self.proxy, self.instance_id = proxy, instance_id
        self.labels = {**labels, LABEL_HOST: instance_id}
        self.path = proxy.directory / f"{instance_id}.sock"
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(self.path))
        os.chmod(self.path, 0o660)
        self.server.listen(64)
        threading.Thread(target=self._accept, daemon=True, name=f"engine-{instance_id}").start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.server.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        upstream = None
        try:
            head, rest = _read_head(conn)
            if head is None:
                return
            req = _Request(head)
            body = None
            if req.method == "POST" and (_CREATE.match(req.path) or _VOLUME.match(req.path)):
                body = _read_body(conn, req, rest)
                rest = b""
                problem = ("the local cloud's instance engine does not allow named volumes "
                           "(a volume can bind any of the machine's paths)"
                           if _VOLUME.match(req.path) else None)
                config = json.loads(body or b"{}")
                problem = problem or refusal(config)
                if problem:
                    _answer(conn, 403, problem)
                    return
                config["Labels"] = {**(config.get("Labels") or {}), **self.labels}
                body = json.dumps(config).encode()
            self.proxy.note_images(images_named(req.method, req.path, req.query))
            upgrade = (req.header("Upgrade") is not None)
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.proxy.engine)
            upstream.sendall(req.render(body, close=not upgrade) + rest)
            _pipe(conn, upstream)
        except (OSError, ValueError) as exc:
            log.debug("engine request of %s: %s", self.instance_id, exc)
        finally:
            for s in (conn, upstream):
                if s is not None:
                    with contextlib.suppress(OSError):
                        s.close()


class EngineProxy:
    """Per-instance engine sockets of one local cloud."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.directory = Path(tempfile.mkdtemp(prefix="overcast-engine-"))
        self._instances: dict[str, InstanceEngine] = {}
        self._images: set[str] = set()
        self._lock = threading.Lock()

    def open(self, instance_id: str, labels: dict[str, str]) -> Path:
        with self._lock:
            if instance_id not in self._instances:
                self._instances[instance_id] = InstanceEngine(self, instance_id, labels)
            return self._instances[instance_id].path

    def close(self, instance_id: str) -> None:
        with self._lock:
            found = self._instances.pop(instance_id, None)
        if found is not None:
            found.close()

    def note_images(self, names: list[str]) -> None:
        with self._lock:
            self._images.update(n for n in names if n)

    def images(self) -> list[str]:
        with self._lock:
            return sorted(self._images)

    def stop(self) -> None:
        for iid in list(self._instances):
            self.close(iid)
        shutil.rmtree(self.directory, ignore_errors=True)


def _read_head(conn: socket.socket) -> tuple[bytes | None, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
        if len(data) > MAX_HEAD:
            raise ValueError("request head too large")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _read_body(conn: socket.socket, req: _Request, rest: bytes) -> bytes:
    if (req.header("Transfer-Encoding") or "").lower() == "chunked":
        return _read_chunked(conn, rest)
    length = int(req.header("Content-Length") or 0)
    if length > MAX_BODY:
        raise ValueError("request body too large")
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    return rest[:length]


def _read_chunked(conn: socket.socket, data: bytes) -> bytes:
    out = b""
    while True:
        while b"\r\n" not in data:
            data += conn.recv(65536) or b"\r\n0\r\n"
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        while len(data) < size + 2:
            chunk = conn.recv(65536)
            if not chunk:
                raise ValueError("truncated chunked body")
            data += chunk
        out, data = out + data[:size], data[size + 2:]
        if len(out) > MAX_BODY:
            raise ValueError("request body too large")


def _answer(conn: socket.socket, status: int, message: str) -> None:
    body = json.dumps({"message": message}).encode()
    conn.sendall(f"HTTP/1.1 {status} Forbidden\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)


def _pipe(a: socket.socket, b: socket.socket) -> None:
    """Copy both ways until both sides are done (half-closes passed on)."""
    def copy(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                dst.sendall(chunk)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    other = threading.Thread(target=copy, args=(b, a), daemon=True)
    other.start()
    copy(a, b)
    other.join()
