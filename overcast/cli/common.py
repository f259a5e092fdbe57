"""Shared CLI plumbing: error -> exit code mapping, consoles, the stack's run files."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from overcast import settings

# Exit codes: 0 ok, 1 operation failed, 2 usage (click), 3 not configured / unreachable.
EXIT_FAILED, EXIT_NOT_CONFIGURED = 1, 3

out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = EXIT_FAILED) -> None:
    """Print one short red message (no traceback) and exit with `code`."""
    err.print(Text.assemble(("Error: ", "bold red"), (message, "red")))
    raise click.exceptions.Exit(code)


class OvercastGroup(click.Group):
    """A click group that turns overcast errors into a message and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        from overcast.client.errors import NotConfigured, OvercastError

        try:
            return super().invoke(ctx)
        except NotConfigured as exc:
            fail(str(exc), EXIT_NOT_CONFIGURED)
        except OvercastError as exc:
            fail(str(exc), EXIT_FAILED)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


# -- run files of `overcast up` ---------------------------------------------------------------
COMPONENTS = ("server", "localcloud")


def pid_file(component: str) -> Path:
    return settings.run_dir() / f"{component}.pid"


def read_pid(component: str) -> int | None:
    try:
        return int(pid_file(component).read_text().strip())
    except (OSError, ValueError):
        return None


def write_pid(component: str, pid: int) -> None:
    pid_file(component).write_text(f"{pid}\n")


def pid_alive(pid: int | None) -> bool:
    """True if `pid` runs and (where /proc exists) is an overcast process, not a reused pid."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # not ours
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        if "overcast" not in text:
            return False
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z"):
            return False  # a zombie is not running
    return True


def running_pid(component: str) -> int | None:
    pid = read_pid(component)
    return pid if pid_alive(pid) else None


def _signal(pid: int, sig: int) -> None:
    """Signal `pid`'s process group if it leads one (`up` starts each child in its own
    session, so the local cloud's instance processes go too), else just `pid`."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_pid(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM, wait up to `timeout` s, then SIGKILL."""
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    _signal(pid, signal.SIGKILL)


def localcloud_info() -> dict[str, Any] | None:
    """`$OVERCAST_HOME/run/localcloud.json` ({"endpoint", "imds", "pid"}), if present."""
    try:
        return json.loads((settings.run_dir() / "localcloud.json").read_text())
    except (OSError, ValueError):
        return None


def stack_file() -> Path:
    return settings.run_dir() / "up.json"


def read_stack() -> dict[str, Any]:
    try:
        return json.loads(stack_file().read_text())
    except (OSError, ValueError):
        return {}
