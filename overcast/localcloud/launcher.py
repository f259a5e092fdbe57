"""Starting and stopping an instance's agent process, for the runner (runner.py).

`Launcher` starts a fresh interpreter; `ForkServerLauncher` forks from the warm zygote
(forkserver.py) and falls back to a fresh interpreter. `stop_process` shuts a booted instance's
process group down as a VM shutdown would: SIGTERM, then SIGKILL after STOP_GRACE.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from overcast.localcloud.forkserver import ForkServer, die_with_parent, supports

# The runner's logger: these messages are about the runner's instances.
log = logging.getLogger("overcast.localcloud.runner")

STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL, like a VM shutdown


class Launcher:
    """Starts an instance's agent as a fresh interpreter."""

    def launch(self, command: Sequence[str], env: dict[str, str], log_file: IO[bytes]) -> Any:
        """Start the process in its own process group; return a Popen-like object
        (pid, poll(), returncode, wait())."""
        return subprocess.Popen(list(command), env=env, stdout=log_file,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=die_with_parent)

    def close(self) -> None:
        """Local cloud shutdown, after every instance process is gone."""


class ForkServerLauncher(Launcher):
    """Forks instances from a warm zygote that has imported distributed & co. once (see
    forkserver.py); a fresh interpreter when the zygote is not ready (yet) or fails."""

    def __init__(self, env: dict[str, str]) -> None:
        self._said: set[str] = set()
        self.server: ForkServer | None = None
        try:
            self.server = ForkServer(env)
        except OSError as exc:
            log.warning("cannot start the fork server (%s): instances start as fresh "
                        "interpreters", exc)

    def wait_ready(self, timeout: float) -> bool:
        return self.server is not None and self.server.ready(timeout)

    def launch(self, command: Sequence[str], env: dict[str, str], log_file: IO[bytes]) -> Any:
        if self.server is None:
            why = "no fork server"
        elif not supports(command):
            why = f"the fork server cannot run {list(command)[:2]}"
        elif not self.server.ready():
            why = "the fork server is not ready (still importing, or it exited)"
        else:
            try:
                return self.server.spawn(command, env, log_file)
            except (OSError, ValueError) as exc:
                why = f"the fork server failed: {exc}"
        if why not in self._said:  # once per reason: the runner launches in bursts
            self._said.add(why)
            log.warning("%s: starting the instance as a fresh interpreter", why)
        return super().launch(command, env, log_file)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()


def default_launcher(env: dict[str, str]) -> Launcher:
    """The fork server unless OVERCAST_LOCALCLOUD_FORKSERVER=0 (e.g. to measure without)."""
    if os.environ.get("OVERCAST_LOCALCLOUD_FORKSERVER", "1") == "0":
        return Launcher()
    return ForkServerLauncher(env)


@dataclass
class Booted:
    instance_id: str
    account: str
    region: str
    address: str
    proc: Any
    log_file: IO[bytes]
    started: float


def stop_process(booted: Booted) -> None:
    """SIGTERM the instance's process group, SIGKILL after STOP_GRACE; closes its log."""
    proc = booted.proc
    try:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        else:  # the agent is gone; reap what it left in its group
            os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    finally:
        booted.log_file.close()
