"""A warm fork server ("zygote") for the local runner.

A fresh interpreter per instance pays ~0.5-1 s of imports (distributed, boto3, httpx, bokeh) on
every boot; the zygote pays them once and forks a child per instance, which starts in a few ms
with everything imported.

The zygote (zygote.py, ``python -m overcast.localcloud.zygote SOCKET``) listens on a unix
socket in a private (0700) directory. A request is one connection: a 4-byte length with the log
file's fd attached (SCM_RIGHTS), then JSON ``{"argv", "env"}``. The answer is a line
``{"pid": n}`` (or ``{"error": ...}``), and later, on the same connection, ``{"exit": code}`` once
the zygote has reaped the child (code as Popen's returncode: negative for a signal). A child runs
``python -m MODULE``/``python -c CODE`` argv in-process; anything else is the plain subprocess
launcher's job (see `supports`).

Runner side: `ForkServer` starts and stops the zygote and spawns; `ForkedProcess` is the
Popen-like handle (pid, poll(), returncode, wait()).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import IO

STOP_GRACE = 3.0  # zygote shutdown: SIGTERM to every child, SIGKILL after this
REQUEST_TIMEOUT = 10.0
ORPHANED = 255  # returncode when the zygote died before it could report the child's exit
HEADER = struct.Struct("!I")  # request body length


def die_with_parent() -> None:
    """SIGTERM this process when the thread that started it dies, even by SIGKILL (Linux
    prctl), so a crashed local cloud leaves no VM processes behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def supports(argv: Sequence[str]) -> bool:
    """Whether a child of the zygote can run this command as a fresh interpreter would."""
    return (len(argv) >= 3 and argv[1] in ("-m", "-c")
            and os.path.realpath(argv[0]) == os.path.realpath(sys.executable))


# -- runner side ------------------------------------------------------------------------------
class ForkedProcess:
    """A child of the zygote, as the runner sees it: pid (also its process group), poll(),
    wait(), returncode. Thread-safe: the runner polls from its loop and its stopper threads."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._sock: socket.socket | None = sock
        self._buf = b""
        self._lock = threading.Lock()
        sock.setblocking(False)  # two threads may both see it readable; only one gets the data

    def poll(self) -> int | None:
        return self._check(0.0)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if left <= 0:
                raise subprocess.TimeoutExpired(f"forked pid {self.pid}", timeout or 0)
            self._check(left)
        return self.returncode

    def _check(self, timeout: float) -> int | None:
        sock = self._sock
        if self.returncode is not None:
            return self.returncode
        if sock is None:  # orphaned: the zygote is gone, init reaps the child
            if _alive(self.pid):
                time.sleep(min(timeout, 0.05))
                return None
            self.returncode = ORPHANED
            return self.returncode
        try:
            readable, _, _ = select.select([sock], [], [], timeout)
        except (OSError, ValueError):  # closed by another thread meanwhile
            return self.returncode
        if not readable:
            return None
        with self._lock:
            if self.returncode is not None or self._sock is None:
                return self.returncode
            try:
                chunk = sock.recv(4096)
            except BlockingIOError:
                return None
            except OSError:
                chunk = b""
            self._buf += chunk
            if b"\n" in self._buf:
                self.returncode = int(json.loads(self._buf.split(b"\n", 1)[0])["exit"])
            if self.returncode is not None or not chunk:
                sock.close()
                self._sock = None
        return self.returncode


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


class ForkServer:
    """Starts the zygote (a fresh interpreter with `env`) and asks it for children."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self._dir = tempfile.mkdtemp(prefix="overcast-fs-")  # 0700: only this user may connect
        self.path = os.path.join(self._dir, "zygote.sock")
        self._ready = False
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "overcast.localcloud.zygote", self.path],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                start_new_session=True, preexec_fn=die_with_parent)
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise

    def ready(self, timeout: float = 0.0) -> bool:
        """Whether the zygote has finished its imports and accepts requests; waits up to
        `timeout` seconds for that."""
        if self._ready:
            return self.proc.poll() is None
        out = self.proc.stdout
        if out is None or out.closed or self.proc.poll() is not None:
            return False
        if select.select([out], [], [], timeout)[0]:
            self._ready = out.readline().strip() == b"ready"
            out.close()
        return self._ready

    def spawn(self, argv: Sequence[str], env: dict[str, str], log_file: IO[bytes]) -> ForkedProcess:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(REQUEST_TIMEOUT)
            sock.connect(self.path)
            body = json.dumps({"argv": list(argv), "env": env}).encode()
            socket.send_fds(sock, [HEADER.pack(len(body))], [log_file.fileno()])
            sock.sendall(body)
            line = b""
            while not line.endswith(b"\n"):
                chunk = sock.recv(256)
                if not chunk:
                    raise ConnectionError("the fork server closed the connection")
                line += chunk
            reply = json.loads(line)
            if "pid" not in reply:
                raise OSError(reply.get("error", f"bad fork server reply {reply!r}"))
        except BaseException:
            sock.close()
            raise
        return ForkedProcess(sock, int(reply["pid"]))

    def stop(self) -> None:
        """Stop the zygote: it SIGTERMs what children it still has, SIGKILLs them after
        STOP_GRACE, and exits."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_GRACE + 5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        shutil.rmtree(self._dir, ignore_errors=True)
