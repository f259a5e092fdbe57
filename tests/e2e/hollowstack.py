"""A hollow stack for e2e tests and bench/scale.py: `overcast local-cloud --hollow` (instances
run in EC2 but boot nothing), a control plane recording its own AWS calls, and every hollow
instance's agent played in a thread of this process (overcast/localcloud/hollowagents.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.helpers import environ


@dataclass
class HollowBench:
    """A hollow stack with its agents played in a thread of this process."""

    stack: Any
    api: httpx.Client
    record: Path
    player: Any
    images: dict[str, str]  # region -> the overcast image (its builder was played too)

    def calls_between(self, start: float, end: float) -> list[dict[str, Any]]:
        lines = self.record.read_text().splitlines() if self.record.exists() else []
        calls = (json.loads(line) for line in lines)
        return [c for c in calls if start <= c["t"] <= end]

    def cluster(self, name: str) -> dict[str, Any]:
        return self.api.get(f"/clusters/{name}").raise_for_status().json()

    def wait_running(self, name: str, workers: int, timeout: float,
                     seen: list[tuple[float, int]] | None = None) -> dict[str, Any]:
        """Poll until the cluster runs with every worker registered, it fails, or timeout.
        `seen` collects (time, workers_ready) at each poll."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.cluster(name)
            if seen is not None:
                seen.append((time.time(), c["workers_ready"]))
            done = c["state"] == "running" and c["workers_ready"] >= workers
            if done or c["state"] == "error" or time.monotonic() > deadline:
                return c
            time.sleep(0.1)

    def stop_cluster(self, name: str, timeout: float = 300) -> None:
        self.api.delete(f"/clusters/{name}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.cluster(name)["state"] in ("stopped", "error"):
                return
            time.sleep(0.5)


class PlayerThread:
    """overcast.localcloud.hollowagents.Player in its own event loop and thread."""

    def __init__(self, spool: Path) -> None:
        from overcast.localcloud.hollowagents import Player

        self.player = Player(spool)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete,
                                        args=(self.player.run(),), name="hollow-agents",
                                        daemon=True)

    def start(self) -> PlayerThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self.player.stop)
        self._thread.join(60)

    def requests(self) -> dict[str, int]:
        return dict(Counter(self.player.requests))


def _keep_logs(home: Path) -> None:
    """With OVERCAST_BENCH_KEEP=<dir>, the run's logs and AWS-call record are copied there
    (the stack's home is a temporary directory): what a slow run was doing, afterwards."""
    import os
    import shutil

    keep = os.environ.get("OVERCAST_BENCH_KEEP")
    if not keep:
        return
    Path(keep).mkdir(parents=True, exist_ok=True)
    for name in ("server.log", "local-cloud.log", "aws-calls.jsonl"):
        if (home / name).exists():
            shutil.copy(home / name, Path(keep) / name)


@contextlib.contextmanager
def hollow_stack(store: str = "sqlite") -> Iterator[HollowBench]:
    """Local cloud --hollow + control plane (recording AWS calls) + played agents; the hosted
    image built (its builder played too), so clusters start without waiting for a build."""
    from overcast.reconciler.contexts import RECORD_ENV
    from overcast.server.bootstrap import ensure_first_user
    from overcast.store.db import Database
    from tests.e2e.stack import Stack

    with tempfile.TemporaryDirectory(prefix="overcast-hollow-") as tmp, \
            environ(OVERCAST_HOME=tmp):
        home, record = Path(tmp), Path(tmp) / "aws-calls.jsonl"
        pg = None
        if store == "postgresql":
            from tests.pgserver import PostgresServer
            pg = PostgresServer().start()
        stack = Stack(home, extra_cloud_args=("--hollow",),
                      database_url=pg.create_database("hollow") if pg else None)
        stack.server_env[RECORD_ENV] = str(record)
        player = None
        try:
            stack.start_cloud()
            stack.start_server()
            spool = Path(json.loads((home / "run" / "localcloud.json").read_text())["hollow"])
            player = PlayerThread(spool).start()
            slug, token = ensure_first_user("hollow-user", Database(stack.database_url))
            images = stack.build_images(slug, token, timeout=300)
            api = httpx.Client(base_url=f"{stack.url}/api/v1/accounts/{slug}",
                               headers={"Authorization": f"Bearer {token}"}, timeout=60)
            yield HollowBench(stack, api, record, player, images)
        finally:
            if player is not None:
                player.stop()
            stack.stop()
            _keep_logs(home)
            if pg is not None:
                pg.stop()
