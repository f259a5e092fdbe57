"""The zygote of the local runner's fork server (see forkserver.py for the protocol):
``python -m overcast.localcloud.zygote SOCKET``. It imports what the agent needs once, then
forks one child per request, each running ``python -m``/``python -c`` argv in-process.

Single-threaded on purpose: a thread would be missing from every child, with whatever lock it
held. One selector waits for requests and, through the signal wakeup pipe, for SIGCHLD
(reaping) and SIGTERM (stop: SIGTERM every child, SIGKILL after STOP_GRACE, exit).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any

from overcast.localcloud.forkserver import (
    HEADER,
    REQUEST_TIMEOUT,
    STOP_GRACE,
    die_with_parent,
    supports,
)

# What the agent imports on its way to "ready" (measured: modules a child imported that the
# zygote had not), plus the dashboard it attaches right after (bokeh: ~1 s of CPU that would
# otherwise compete with the workers' start on a small machine).
PRELOAD = (
    "overcast.agent.main",
    "overcast.agent.dask_process",
    "boto3",
    "botocore.config",
    "distributed.dashboard.scheduler",
    "httpcore",  # httpx imports its transport's stack only when a client is made
    "anyio._backends._asyncio",
    "h11",
    "numpy.random",  # for the reseed after fork
    "tornado.platform.asyncio",
    "distributed.diagnostics.websocket",
    "ctypes",
    "runpy",
)
# dask config keys listing the HTTP route modules a scheduler/worker imports when it starts.
ROUTE_KEYS = ("distributed.scheduler.http.routes", "distributed.worker.http.routes")


def _say(message: str) -> None:
    # Not the logging module: handlers on the root logger would be inherited by every child.
    print(f"overcast fork server [{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def serve(path: str) -> None:
    import gc
    import importlib

    started = time.perf_counter()
    names = list(PRELOAD)
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a child then imports it itself, as before
            _say(f"could not preload {name}: {exc}")
        if name == "distributed.dashboard.scheduler":
            import dask

            names += [m for key in ROUTE_KEYS for m in dask.config.get(key, [])]
    _warm()
    threads = threading.enumerate()
    if len(threads) > 1:  # a thread would be missing (with whatever lock it held) in children
        _say(f"a preloaded module started threads {threads}; refusing to fork")
        sys.exit(3)
    gc.collect()
    gc.freeze()  # fewer copy-on-write page faults and shorter GC passes in the children
    # Native threads (numpy's OpenBLAS pool) are fine: OpenBLAS re-creates its pool after fork
    # (pthread_atfork). Python-level ones are refused above.
    native = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else "?"
    _say(f"preloaded {len(sys.modules)} modules in {time.perf_counter() - started:.2f} s "
         f"({native} native threads)")
    _Zygote(path).run()


def _warm() -> None:
    """Fill per-process caches the children would otherwise fill each (measured)."""
    with contextlib.suppress(Exception):
        # The agent's HTTP client context (the CA bundle: ~40 ms per process).
        from overcast.agent.control import _ssl_context

        _ssl_context()
    with contextlib.suppress(Exception):
        # A worker reports package versions on registering (~80 ms of importlib.metadata);
        # distributed caches them per process.
        from distributed.versions import get_versions

        get_versions()
    with contextlib.suppress(Exception):
        # The agent's log shipper makes a CloudWatch Logs client right after "ready": the
        # first client in a process costs ~0.1 s more CPU than later ones (botocore's module
        # caches). Explicit dummy keys: no credential lookup, and no request is ever sent.
        import boto3

        boto3.session.Session().client("logs", region_name="us-east-1",
                                       aws_access_key_id="warm", aws_secret_access_key="warm",
                                       endpoint_url="http://127.0.0.1:9")


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
                os.rmdir(os.path.dirname(self.path))  # ForkServer's private dir, if it died

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        fds: list[int] = []
        pid = 0
        try:
            conn.settimeout(REQUEST_TIMEOUT)  # the runner is trusted; this only bounds a bug
            header, fds, _, _ = socket.recv_fds(conn, HEADER.size, 1)
            size = HEADER.unpack(header)[0]
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
            _set_name(argv)
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
        _after_fork()
        if argv[1] == "-m":
            sys.argv = [argv[2], *argv[3:]]
            runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
        else:
            import types

            sys.argv = ["-c", *argv[3:]]
            sys.path[0] = ""
            main = sys.modules["__main__"] = types.ModuleType("__main__")  # not the zygote's
            exec(compile(argv[2], "<string>", "exec"), main.__dict__)
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


def _after_fork() -> None:
    """Module state from the zygote that would be wrong in a child (`random` reseeds itself)."""
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    bokeh_server = sys.modules.get("bokeh.server.tornado")
    if bokeh_server is not None and getattr(bokeh_server, "PID", None) != os.getpid():
        bokeh_server.PID = os.getpid()  # its stats logs would show the zygote's pid/memory
        if getattr(bokeh_server, "PROC", None) is not None:
            bokeh_server.PROC = type(bokeh_server.PROC)(os.getpid())


def _set_name(argv: list[str]) -> None:
    """`ps -o comm` / top show the module (e.g. overcast.agent), not the zygote's name."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_name = 15
        name = (argv[2] if argv[1] == "-m" else "python-c").encode()[:15]
        ctypes.CDLL("libc.so.6").prctl(pr_set_name, ctypes.c_char_p(name))


def _exit_code(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


if __name__ == "__main__":
    serve(sys.argv[1])
