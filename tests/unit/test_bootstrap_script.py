"""The VM image's bootstrap script (overcast/agent/bootstrap.sh), run for real against a small
HTTP server standing in for the control plane: it retries a control plane that answers 500
for a moment, and a failed build still reports why. It stops at the download step (the
served version is not the one asked for), so nothing is installed on this machine."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)


class ControlPlane(BaseHTTPRequestHandler):
    index_errors = 1  # this many 500s before the index is served
    seen: list[tuple[str, str, dict | None]] = []

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, None))
        if self.path.endswith("/index.json") and type(self).index_errors > 0:
            type(self).index_errors -= 1
            self._answer(500, b"Internal Server Error")
        elif self.path.endswith("/index.json"):
            self._answer(200, json.dumps({"version": "9.9.9", "filename": "x.whl",
                                          "sha256": "0" * 64}).encode())
        else:
            self._answer(404, b"{}")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(("POST", self.path, {"body": json.loads(body),
                                              "auth": self.headers["Authorization"]}))
        self._answer(204, b"")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def control_plane():
    ControlPlane.seen = []
    ControlPlane.index_errors = 1
    server = ThreadingHTTPServer(("127.0.0.1", 0), ControlPlane)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_a_transient_500_is_retried_and_a_failure_is_reported(control_plane, tmp_path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(sys.executable)  # a Python 3.11 with venv, as on Debian 12
    script = resources.files("overcast.agent").joinpath("bootstrap.sh")
    env = {"PATH": f"{bindir}:/usr/bin:/bin",
           "OVERCAST_CONTROL_PLANE": control_plane, "OVERCAST_VERSION": "0.1.0",
           "OVERCAST_BUILD_ID": "7", "OVERCAST_BUILD_TOKEN": "build-token-7",
           "OVERCAST_CONTAINER_RUNTIME": "skip", "HOME": str(tmp_path)}
    before = set(Path("/tmp").glob("overcast-build.*"))  # the script's own mktemp template
    done = subprocess.run(["/bin/sh", str(script)], env=env, capture_output=True, text=True,
                          timeout=45)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "retrying" in out and "control plane serves 9.9.9, not 0.1.0" in out
    gets = [path for method, path, _ in ControlPlane.seen if method == "GET"]
    assert gets == ["/api/v1/dist/index.json"] * 2  # one 500, then the answer
    reports = [extra for method, path, extra in ControlPlane.seen
               if method == "POST" and path == "/api/v1/images/builds/7/report"]
    assert reports == [{"body": {"ok": False, "reason": "bootstrap failed at step "
                                                        "'download-agent' (exit code 1)"},
                        "auth": "Bearer build-token-7"}]
    assert set(Path("/tmp").glob("overcast-build.*")) <= before  # cleaned up after the report
