"""A warm fork server ("zygote") for the local runner.

A fresh interpreter per instance pays ~0.5-1 s of imports (distributed, boto3, httpx, bokeh) on
every boot; the zygote pays them once and forks a child per instance, which starts in a few ms
with everything imported.

Zygote (``python -m overcast.localcloud.forkserver SOCKET``): single-threaded (forking a
threaded process is unsafe); one selector over the listening unix socket and the signal wakeup
pipe. A request is one connection: a 4-byte length with the log file's fd attached
(SCM_RIGHTS), then JSON ``{"argv", "env"}``. The answer is a line ``{"pid": n}``, and on the
same connection a line ``{"exit": code}`` once the zygote has reaped the child (code as Popen's
returncode: negative for a signal). A child runs ``python -m MODULE`` / ``python -c CODE`` argv
in-process; anything else is the plain subprocess launcher's job (see `supports`).

Runner side: `ForkServer` starts and stops the zygote and spawns; `ForkedProcess` is the
Popen-like handle (pid, poll(), returncode, wait()).
"""

from __future__ import annotations

import contextlib
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
from typing import IO, Any

# What the agent imports on its way to "ready", plus the dashboard it attaches right after
# (bokeh: ~1 s of CPU that would otherwise compete with the workers' start on a small machine).
PRELOAD = (
    "overcast.agent.main",
    "overcast.agent.dask_process",
    "boto3",
    "botocore.config",
    "distributed.dashboard.scheduler",
    "ctypes",
    "runpy",
)
STOP_GRACE = 3.0  # zygote shutdown: SIGTERM to every child, SIGKILL after this
REQUEST_TIMEOUT = 10.0
ORPHANED = 255  # returncode when the zygote died before it could report the child's exit
_HEADER = struct.Struct("!I")


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
                [sys.executable, "-m", "overcast.localcloud.forkserver", self.path],
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
            socket.send_fds(sock, [_HEADER.pack(len(body))], [log_file.fileno()])
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


# -- zygote side ------------------------------------------------------------------------------
def _say(message: str) -> None:
    # Not the logging module: handlers on the root logger would be inherited by every child.
    print(f"overcast fork server [{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def serve(path: str) -> None:
    import gc
    import importlib

    started = time.perf_counter()
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a child then imports it itself, as before
            _say(f"could not preload {name}: {exc}")
    threads = threading.enumerate()
    if len(threads) > 1:  # a thread would be missing (with whatever lock it held) in children
        _say(f"a preloaded module started threads {threads}; refusing to fork")
        sys.exit(3)
    gc.collect()
    gc.freeze()  # fewer copy-on-write page faults and shorter GC passes in the children
    _say(f"preloaded {len(sys.modules)} modules in {time.perf_counter() - started:.2f} s")
    _Zygote(path).run()


class _Zygote:
    def __init__(self, path: str) -> None:
        import selectors

        self.pid = os.getpid()
        self.path = path
        self.children: dict[int, socket.socket] = {}  # pid -> its request's connection
        self.deadline: float | None = None  # set once stopping
        self.killed = False
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(64)
        self.listener.setblocking(False)
        # Signals arrive as bytes on a pipe, so one select() waits for requests and children.
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)  # a Python handler, so the wakeup fd is written
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "signal")

    def run(self) -> None:
        print("ready", flush=True)
        os.dup2(2, 1)  # stdout was the readiness pipe; stray prints go to stderr now
        try:
            while self.deadline is None or self.children:
                timeout = None
                if self.deadline is not None:
                    timeout = max(0.0, self.deadline - time.monotonic())
                for key, _ in self.selector.select(timeout):
                    if key.data == "accept":
                        self._accept()
                    else:
                        self._signals()
                if self.deadline is not None and time.monotonic() >= self.deadline:
                    if self.killed:
                        _say(f"children {sorted(self.children)} did not exit; leaving")
                        break
                    self._killall(signal.SIGKILL)
                    self.killed, self.deadline = True, time.monotonic() + 5
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        fds: list[int] = []
        pid = 0
        try:
            conn.settimeout(REQUEST_TIMEOUT)  # the runner is trusted; this only bounds a bug
            header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 1)
            size = _HEADER.unpack(header)[0]
            body = b""
            while len(body) < size:
                chunk = conn.recv(size - len(body))
                if not chunk:
                    raise ConnectionError("short request")
                body += chunk
            request = json.loads(body)
            argv, env = list(request["argv"]), dict(request["env"])
            if len(fds) != 1 or not supports(argv):
                raise ValueError(f"cannot run {argv[:2]!r} with {len(fds)} fds")
            pid = os.fork()
            if pid == 0:
                self._child(fds[0], conn, argv, env)  # never returns
            self.children[pid] = conn
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        except (OSError, ValueError, KeyError, struct.error) as exc:
            if pid:  # nobody would know of this child: stop it (reaped as usual)
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"error": str(exc)}).encode() + b"\n")
            conn.close()
        finally:
            for fd in fds:
                os.close(fd)

    def _signals(self) -> None:
        try:
            got = set(os.read(self.wake_r, 4096))
        except BlockingIOError:
            got = set()
        if got & {signal.SIGTERM, signal.SIGINT} and self.deadline is None:
            self.selector.unregister(self.listener)
            self.listener.close()
            self.deadline = time.monotonic() + STOP_GRACE
            self._killall(signal.SIGTERM)
        self._reap()  # on every wake-up: SIGCHLDs coalesce

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is not None:
                code = os.waitstatus_to_exitcode(status)
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
                conn.close()

    def _killall(self, sig: int) -> None:
        for pid in self.children:
            with contextlib.suppress(OSError):
                os.killpg(pid, sig)

    def _child(self, log_fd: int, conn: socket.socket, argv: list[str],
               env: dict[str, str]) -> None:
        code = 1
        try:
            os.setsid()  # its own process group, so the runner's killpg reaches only it
            die_with_parent()
            if os.getppid() != self.pid:  # the zygote died before prctl: follow it
                os._exit(1)
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self.selector.close()
            self.listener.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            for other in (conn, *self.children.values()):
                other.close()
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.close(devnull)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.close(log_fd)
            dask_env = {k: v for k, v in os.environ.items() if k.startswith("DASK_")}
            os.environ.clear()
            os.environ.update(env)
            code = _run(argv, dask_env)
        finally:
            os._exit(code)


def _run(argv: list[str], zygote_dask_env: dict[str, str]) -> int:
    """Run `python -m MODULE ...` / `python -c CODE ...` in this (forked) process; return the
    exit code an interpreter would have."""
    import atexit
    import runpy
    import traceback

    try:
        if zygote_dask_env != {k: v for k, v in os.environ.items() if k.startswith("DASK_")}:
            import dask.config  # read at import in the zygote: read again with this env

            dask.config.refresh()
        if "numpy" in sys.modules:  # unlike `random`, numpy does not reseed after fork
            sys.modules["numpy"].random.seed()
        if argv[1] == "-m":
            sys.argv = [argv[2], *argv[3:]]
            runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
        else:
            sys.argv = ["-c", *argv[3:]]
            sys.path[0] = ""
            exec(compile(argv[2], "<string>", "exec"), {"__name__": "__main__"})
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except BaseException:  # noqa: BLE001 - what the interpreter would print, then exit 1
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()  # e.g. logging.shutdown, as at interpreter exit
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):
            stream.flush()
    return code


def _exit_code(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


if __name__ == "__main__":
    serve(sys.argv[1])
