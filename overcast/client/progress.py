"""The live display while a cluster starts: rich in a terminal, a compact line otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, Self

from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

STATE_STYLE = {"pending": "yellow", "starting": "yellow", "running": "green",
               "stopping": "magenta", "stopped": "dim", "error": "bold red"}


def summarize(info: dict[str, Any]) -> dict[str, Any]:
    """What the display shows, from a Cluster document of the User API."""
    instances = info.get("instances") or []
    scheduler = next((i for i in instances if i.get("role") == "scheduler"), None)
    wanted = int(info.get("n_workers") or 0) + 1  # the scheduler is an instance too
    ready = sum(1 for i in instances if i.get("state") == "ready")
    return {
        "state": info.get("state", "?"),
        "scheduler": scheduler.get("state") if scheduler else "requested",
        "instances_ready": ready,
        "instances_wanted": max(wanted, len([i for i in instances
                                             if i.get("state") not in ("terminated", "failed")])),
        "workers_ready": int(info.get("workers_ready") or 0),
        "n_workers": int(info.get("n_workers") or 0),
        "reason": info.get("reason"),
        # The newest notification of the cluster: e.g. the image build it waits for.
        "event": (info.get("last_event") or {}).get("message"),
    }


class StartProgress:
    """Context manager; call `update(cluster_document)` after every poll.

    mode: "auto" (rich if stderr is a terminal, else plain), "rich", "plain" or "none".
    """

    def __init__(self, name: str, account: str, mode: str = "auto", stream=None):
        self.name, self.account = name, account
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "rich" if Console(file=self.stream).is_terminal else "plain"
        self.mode = mode
        self.started = time.monotonic()
        self.summary: dict[str, Any] = {"state": "pending", "scheduler": "requested",
                                        "instances_ready": 0, "instances_wanted": 0,
                                        "workers_ready": 0, "n_workers": 0, "reason": None,
                                        "event": None}
        self._last_line: tuple | None = None
        self._live: Live | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __enter__(self) -> Self:
        if self.mode == "rich":
            console = Console(file=self.stream)
            self._live = Live(self, console=console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.__exit__(*exc)
            self._live = None

    def update(self, info: dict[str, Any]) -> None:
        self.summary = summarize(info)
        if self.mode == "plain":
            s = self.summary
            key = (s["state"], s["scheduler"], s["instances_ready"], s["workers_ready"],
                   s["event"])
            if key != self._last_line:  # one line per change, not per poll
                self._last_line = key
                print(self.line(), file=self.stream, flush=True)

    def line(self) -> str:
        s = self.summary
        text = (f"overcast: cluster {self.name} ({self.account}) {s['state']}: scheduler "
                f"{s['scheduler']}, instances ready {s['instances_ready']}/"
                f"{s['instances_wanted']}, workers ready {s['workers_ready']}/{s['n_workers']}, "
                f"{self.elapsed():.0f}s")
        if s["reason"]:
            text += f" ({s['reason']})"
        elif s["event"] and s["state"] in ("pending", "starting"):
            text += f": {s['event']}"
        return text

    def __rich__(self) -> Group:
        # Rendered by Live on each refresh, so elapsed time ticks between polls.
        s = self.summary
        style = STATE_STYLE.get(s["state"], "")
        title = Text.assemble(("Cluster ", "bold"), (self.name, "bold cyan"),
                              (f"  account {self.account}", "dim"))
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim")
        grid.add_column()
        grid.add_row("state", Text(s["state"], style=style))
        grid.add_row("scheduler", s["scheduler"])
        grid.add_row("instances ready", f"{s['instances_ready']}/{s['instances_wanted']}")
        grid.add_row("workers ready", f"{s['workers_ready']}/{s['n_workers']}")
        grid.add_row("elapsed", f"{self.elapsed():.0f}s")
        if s["reason"]:
            grid.add_row("reason", Text(str(s["reason"]), style="red"))
        elif s["event"] and s["state"] in ("pending", "starting"):
            grid.add_row("latest", Text(str(s["event"])))
        parts: list[Any] = [title, grid]
        if s["state"] in ("pending", "starting"):
            parts.insert(0, Spinner("dots", text="starting"))
        return Group(*parts)
