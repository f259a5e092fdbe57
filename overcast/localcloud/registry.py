"""Real OCI registry servers for the local cloud: Debian's `docker-registry` (Distribution).

One stands behind the local ECR (its data plane: `docker login` with the password from
`GetAuthorizationToken`, `docker push`, `docker pull`), a second stands in for Docker Hub.
Each is a `docker-registry serve CONFIG` process on a loopback address and a free port, with
htpasswd (bcrypt) basic auth and filesystem storage in a temporary directory, stopped (and
its storage removed) with the local cloud. Only this package knows it is local.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

BINARY = "docker-registry"  # Debian's package of the same name


class RegistryError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def htpasswd_line(user: str, password: str) -> str:
    import bcrypt

    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=6)).decode()}"


def _die_with_parent() -> None:
    """SIGTERM the registry when the process that started it dies (Linux prctl), so a killed
    local cloud (even SIGKILL) leaves no registry running."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def drop_stale_storage() -> None:
    """Storage of registries whose process is gone (their local cloud was killed)."""
    for folder in Path(tempfile.gettempdir()).glob("overcast-registry-*"):
        try:
            pid = int((folder / "registry.pid").read_text())
            os.kill(pid, 0)
            continue  # still serving
        except (OSError, ValueError):
            pass
        if time.time() - folder.stat().st_mtime > 60:  # not one being started right now
            shutil.rmtree(folder, ignore_errors=True)


class RegistryServer:
    """A registry at `self.host` ("127.0.0.1:PORT") that only `users` may use."""

    def __init__(self, name: str, users: dict[str, str], host: str = "127.0.0.1") -> None:
        if shutil.which(BINARY) is None:
            raise RegistryError(f"{BINARY} is not installed: `apt-get install docker-registry` "
                                f"(`make engine` does it).")
        drop_stale_storage()
        self.name = name
        self.users = dict(users)
        self._dir = Path(tempfile.mkdtemp(prefix=f"overcast-registry-{name}-"))
        self.host = f"{host}:{free_port(host)}"
        self.url = f"http://{self.host}"
        (self._dir / "htpasswd").write_text(
            "".join(htpasswd_line(u, p) + "\n" for u, p in self.users.items()))
        config = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self._dir / "data")},
                        "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
            "auth": {"htpasswd": {"realm": f"overcast-{name}",
                                  "path": str(self._dir / "htpasswd")}},
        }
        (self._dir / "config.yml").write_text(yaml.safe_dump(config))
        self._log = open(self._dir / "registry.log", "wb")  # noqa: SIM115 - closed in stop()
        self._proc: subprocess.Popen | None = subprocess.Popen(
            [BINARY, "serve", str(self._dir / "config.yml")], stdout=self._log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with_parent)
        (self._dir / "registry.pid").write_text(str(self._proc.pid))
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise RegistryError(f"{BINARY} exited: {self.log_tail()}")
            if self.status() in (200, 401):
                return
            time.sleep(0.05)
        raise RegistryError(f"{BINARY} did not answer within {timeout:.0f} s")

    def status(self, user: str | None = None, password: str | None = None) -> int | None:
        """HTTP status of `GET /v2/` (401 without a valid login), None if unreachable."""
        req = urllib.request.Request(self.url + "/v2/")
        if user is not None:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def get(self, path: str, accept: str | None = None) -> tuple[dict[str, Any], Any]:
        """(headers, JSON body) of an authenticated GET under /v2/ (first user's login)."""
        user, password = next(iter(self.users.items()))
        req = urllib.request.Request(self.url + "/v2/" + path.lstrip("/"))
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        if accept:
            req.add_header("Accept", accept)
        with urllib.request.urlopen(req, timeout=5) as resp:
            return dict(resp.headers), json.loads(resp.read() or b"null")

    def tags(self, repository: str) -> list[str]:
        try:
            return list(self.get(f"{repository}/tags/list")[1].get("tags") or [])
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return []
            raise

    def log_tail(self, n: int = 2000) -> str:
        try:
            return (self._dir / "registry.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if not self._log.closed:
            self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RegistryServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
