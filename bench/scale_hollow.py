"""bench/scale.py's cases on hollow instances (`overcast local-cloud --hollow`): "launch" and
"idle". A local cloud whose instances boot nothing, a control plane recording its own AWS calls
(OVERCAST_RECORD_AWS_ACTIONS), and one process playing every instance's agent with the
project's agent client code (overcast/localcloud/hollowagents.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


@dataclass
class HollowBench:
    """A hollow stack with its agents played in a thread of this process."""

    stack: Any
    api: httpx.Client
    record: Path
    player: Any

    def calls_between(self, start: float, end: float) -> list[dict[str, Any]]:
        lines = self.record.read_text().splitlines() if self.record.exists() else []
        calls = (json.loads(line) for line in lines)
        return [c for c in calls if start <= c["t"] <= end]

    def cluster(self, name: str) -> dict[str, Any]:
        return self.api.get(f"/clusters/{name}").raise_for_status().json()

    def wait_running(self, name: str, workers: int, timeout: float) -> dict[str, Any]:
        """Poll until the cluster runs with every worker registered, it fails, or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.cluster(name)
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


@contextlib.contextmanager
def hollow_stack(store: str) -> Iterator[HollowBench]:
    """Local cloud --hollow + control plane (recording AWS calls) + played agents; the hosted
    image built (its builder played too), so clusters start without waiting for a build."""
    from overcast.reconciler.contexts import RECORD_ENV
    from overcast.server.bootstrap import ensure_first_user
    from overcast.store.db import Database
    from tests.e2e.stack import Stack

    with tempfile.TemporaryDirectory(prefix="overcast-hollow-") as tmp:
        home, record = Path(tmp), Path(tmp) / "aws-calls.jsonl"
        os.environ["OVERCAST_HOME"] = str(home)
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
            stack.build_images(slug, token, timeout=300)
            api = httpx.Client(base_url=f"{stack.url}/api/v1/accounts/{slug}",
                               headers={"Authorization": f"Bearer {token}"}, timeout=60)
            yield HollowBench(stack, api, record, player)
        finally:
            if player is not None:
                player.stop()
            stack.stop()
            if pg is not None:
                pg.stop()


def launch_timeout(workers: int) -> float:
    return 60 + 0.3 * workers  # bounded: a slow "before" run reports how far it got


def launch_case(store: str, workers: list[int]) -> Iterator[dict[str, Any]]:
    """For each N: from the create request to every worker registered (workers_ready == N,
    state running), and the control plane's AWS calls in that window. A 1-worker cluster is
    started and stopped first: the account's one-time resources are not in any N's figure."""
    with hollow_stack(store) as bench:
        bench.api.post("/clusters", json={"name": "warmup", "n_workers": 1}).raise_for_status()
        bench.wait_running("warmup", 1, 300)
        bench.stop_cluster("warmup")
        for n in workers:
            name = f"launch{n}"
            start = time.time()
            bench.api.post("/clusters", json={"name": name, "n_workers": n}).raise_for_status()
            c = bench.wait_running(name, n, launch_timeout(n))
            end = time.time()
            ok = c["state"] == "running" and c["workers_ready"] >= n
            calls = bench.calls_between(start, end)
            yield {"case": "launch", "store": store, "workers": n,
                   "launch_seconds": round(end - start, 2) if ok else None,
                   "aws_calls": len(calls), "workers_ready": c["workers_ready"],
                   "state": c["state"], "timeout_seconds": None if ok else launch_timeout(n),
                   "actions": dict(Counter(call["action"] for call in calls)),
                   "agent_requests": bench.player.requests(),
                   "agent_errors": bench.player.player.errors[:3]}
            bench.stop_cluster(name)


def idle_case(store: str, clusters: int = 100, seconds: float = 120.0) -> dict[str, Any]:
    """`clusters` running clusters (a scheduler each, its agent played) left alone for
    `seconds`: the control plane's AWS calls per cluster per minute."""
    with hollow_stack(store) as bench:
        for n in range(clusters):
            bench.api.post("/clusters", json={"name": f"idle{n}", "n_workers": 0})
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            states = [c["state"] for c in bench.api.get("/clusters").json()]
            if states.count("running") == clusters or "error" in states:
                break
            time.sleep(1)
        running = states.count("running")
        time.sleep(5)  # the last starts' own calls out of the window
        before = bench.player.requests()
        start = time.time()
        time.sleep(seconds)
        window = bench.calls_between(start, start + seconds)
        after = bench.player.requests()
    agent = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return {"case": "idle", "store": store, "clusters": running, "seconds": seconds,
            "aws_calls": len(window),
            "actions": dict(Counter(call["action"] for call in window)),
            "aws_calls_per_cluster_minute": round(len(window) / max(running, 1)
                                                  / (seconds / 60), 3),
            "agent_requests_per_second": round(sum(agent.values()) / seconds, 1)}
