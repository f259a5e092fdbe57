"""The scheduler address long-poll: `GET .../scheduler?wait=25` waits in the event loop.

Why: workers used to poll every 50 ms until their scheduler was up (1,000 workers: thousands
of requests per second). A waiting request holds no admission slot, no worker thread and no
database connection: it awaits a future. One task per process reads the clusters that have
waiters, in one query, when this process records a scheduler's ready report (`poke`), and
every RECHECK seconds for reports another replica recorded; it then answers every waiter of
a cluster whose scheduler address is known (or that is going away) at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from anyio import to_thread
from sqlalchemy import select

from overcast.store.db import Database
from overcast.store.models import Cluster

log = logging.getLogger("overcast.server.scheduler_watch")
RECHECK = 1.0  # seconds between reads while anyone waits (another replica's reports)
MAX_WAIT = 60.0
GONE_STATES = ("stopping", "stopped", "error")


def answer_of(cluster: Any) -> dict[str, Any]:
    """The route's JSON (a Cluster, or a row of COLUMNS)."""
    return {"address": cluster.scheduler_address,
            "internal_address": cluster.scheduler_internal_address, "state": cluster.state}


COLUMNS = (Cluster.id, Cluster.scheduler_address, Cluster.scheduler_internal_address,
           Cluster.state)


def settled(answer: dict[str, Any]) -> bool:
    """Nothing more to wait for: the address is known, or the cluster is going away."""
    return bool(answer.get("address")) or answer.get("state") in GONE_STATES


class SchedulerWatch:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._waiters: dict[int, list[asyncio.Future]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poked: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def poke(self) -> None:
        """A scheduler reported ready in this process (called from any thread)."""
        loop, poked = self._loop, self._poked
        if loop is not None and poked is not None and not loop.is_closed():
            loop.call_soon_threadsafe(poked.set)

    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    async def wait(self, cluster_id: int, timeout: float) -> dict[str, Any] | None:
        """The cluster's answer once settled, or None after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # one loop per server (tests start several)
            self._loop, self._poked, self._task = loop, asyncio.Event(), None
        future: asyncio.Future = loop.create_future()
        self._waiters.setdefault(cluster_id, []).append(future)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._watch())
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return None
        finally:
            waiters = self._waiters.get(cluster_id, [])
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._waiters.pop(cluster_id, None)

    async def _watch(self) -> None:
        """Read the waited-for clusters (one query) until nobody waits."""
        assert self._poked is not None
        while self._waiters:
            self._poked.clear()
            ids = list(self._waiters)
            try:
                answers = await to_thread.run_sync(self._read, ids)
            except Exception:
                log.warning("could not read scheduler addresses; retrying", exc_info=True)
                answers = {}
            for cluster_id, answer in answers.items():
                if settled(answer):
                    for future in self._waiters.pop(cluster_id, []):
                        if not future.done():
                            future.set_result(answer)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), RECHECK)

    def _read(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        with self._db.session() as session:
            rows = session.execute(select(*COLUMNS).where(Cluster.id.in_(ids)))
            return {row.id: answer_of(row) for row in rows}


def release_slot(scope: dict[str, Any]) -> None:
    """Give the request's admission slot back (server/admission.py) while it only waits."""
    release: Callable[[], None] | None = scope.get("overcast.release_slot")
    if release is not None:
        release()
