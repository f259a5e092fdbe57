"""Each account's active clusters as list items, in memory: the data behind the list fast path
(overcast.server.listcache).

Why: with 100 creates a second, a cache that any write made stale was rebuilt from the DB
(a thread, three queries, 100 views) before nearly every list, and pollers queued behind those
rebuilds (p99 ~1 s). Here a write in this process patches the snapshot instead (`changed`,
called by the cluster routes after their commit), so the writer's next list shows it without
a rebuild, and snapshots are rebuilt only by age.

Freshness: a snapshot is served for `TTL` seconds from the moment its DB read began; past
`REFRESH` a rebuild starts in the background, so pollers never wait on one. What this process
did not patch in (the reconciler's progress, agent reports, another replica's writes) shows
within `TTL`. Any other API write (`invalidate`) makes every snapshot unservable at once.
A patch that lands while a rebuild is reading is applied again to the rebuilt snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("overcast.server.clusterlists")

TTL = 1.0  # seconds a snapshot is served after its DB read began
REFRESH = 0.5  # seconds after which a served snapshot is rebuilt in the background
IDLE = 60.0  # snapshots of accounts nobody listed for this long are dropped

# account id -> its active clusters as (id, JSON item) newest first, or None when they do not
# fit one page (the route pages them); runs in a worker thread.
Load = Callable[[int], "list[tuple[int, bytes]] | None"]
Run = Callable[..., Awaitable]  # (fn, *args) -> fn(*args) in a worker thread


@dataclass(frozen=True)
class Snapshot:
    generation: int
    made: float  # monotonic time its DB read began
    items: dict[int, bytes]  # cluster id -> its list item (JSON)
    complete: bool = True  # False: more than a page is active; the route pages them
    _pages: dict[int, tuple[bytes, int | None]] = field(default_factory=dict, compare=False)

    def with_item(self, cluster_id: int, item: bytes | None) -> Snapshot:
        items = dict(self.items)
        if item is None:
            items.pop(cluster_id, None)
        else:
            items[cluster_id] = item
        return Snapshot(self.generation, self.made, items, self.complete)

    def page(self, limit: int) -> tuple[bytes, int | None]:
        """The JSON body of the newest `limit`, and the id to pass as `after` if it is full."""
        if limit not in self._pages:
            ids = sorted(self.items, reverse=True)[:limit]
            body = b"[" + b",".join(self.items[i] for i in ids) + b"]"
            self._pages[limit] = (body, ids[-1] if len(ids) == limit else None)
        return self._pages[limit]


class ClusterLists:
    """Snapshots by account. `changed` and `invalidate` may be called from any thread;
    `snapshot` from the event loop."""

    def __init__(self, load: Load, run: Run) -> None:
        self._load = load
        self._run = run
        self._lock = threading.Lock()
        self.generation = 0  # bumped by invalidate(): older snapshots are never served
        self._snaps: dict[int, Snapshot] = {}
        self._used: dict[int, float] = {}
        self._seq = 0  # counts patches
        self._reading: list[int] = []  # the patch count when each running rebuild began
        self._patches: list[tuple[int, int, int, bytes | None]] = []  # seq, account, id, item
        self._building: dict[int, asyncio.Future] = {}

    def changed(self, account_id: int, cluster_id: int, item: bytes | None) -> None:
        """A committed write: the cluster's list item now (None: no longer active)."""
        with self._lock:
            self._seq += 1
            if self._reading:  # a rebuild may have read before this commit: replay it there
                self._patches.append((self._seq, account_id, cluster_id, item))
            snap = self._snaps.get(account_id)
            if snap is not None:
                self._snaps[account_id] = snap.with_item(cluster_id, item)

    def invalidate(self) -> None:
        with self._lock:
            self.generation += 1
            self._snaps.clear()

    async def snapshot(self, account_id: int) -> Snapshot | None:
        """A snapshot that shows every write done before this call, no older than TTL (or
        begun after this call); None if there is none to give (the caller uses the route)."""
        arrived, arrived_at = self.generation, time.monotonic()
        self._used[account_id] = arrived_at
        snap = self._snaps.get(account_id)
        if snap is not None and snap.generation >= arrived and arrived_at - snap.made < TTL:
            if arrived_at - snap.made >= REFRESH:
                self._build(account_id)  # refresh ahead: served meanwhile
            return snap if snap.complete else None
        for _ in range(3):
            snap = await asyncio.shield(self._build(account_id))
            if snap is None:
                return None
            if snap.generation >= arrived and (snap.made >= arrived_at or
                                               time.monotonic() - snap.made < TTL):
                return snap if snap.complete else None
        return None  # invalidated again and again meanwhile: the route answers

    def _build(self, account_id: int) -> asyncio.Future:
        """The rebuild in progress for the account, else a new one (one at a time)."""
        building = self._building.get(account_id)
        loop = asyncio.get_running_loop()
        if building is not None and building.get_loop() is loop:  # tests run several loops
            return building
        future = asyncio.ensure_future(self._rebuild(account_id))
        self._building[account_id] = future
        future.add_done_callback(lambda f: self._building.pop(account_id, None)
                                 if self._building.get(account_id) is f else None)
        return future

    async def _rebuild(self, account_id: int) -> Snapshot | None:
        with self._lock:
            generation, made, seq = self.generation, time.monotonic(), self._seq
            self._reading.append(seq)
        snap, items, failed = None, None, True
        try:
            items = await self._run(self._load, account_id)
            failed = False
        except Exception:
            log.exception("Could not read the clusters of account %s", account_id)
        finally:
            with self._lock:
                self._reading.remove(seq)
                if not failed:  # None: too many for one page, remembered for TTL as such
                    snap = self._keep(account_id, generation, made, seq, items)
                self._trim(made)
        return snap

    def _keep(self, account_id: int, generation: int, made: float, seq: int,
              items: list[tuple[int, bytes]] | None) -> Snapshot:
        """The rebuilt snapshot with the patches that landed while it read (under the lock)."""
        snap = Snapshot(generation, made, dict(items or ()), complete=items is not None)
        for patch_seq, account, cluster_id, item in self._patches:
            if patch_seq > seq and account == account_id:
                snap = snap.with_item(cluster_id, item)
        current = self._snaps.get(account_id)
        if generation == self.generation and (current is None or current.made <= made):
            self._snaps[account_id] = snap
        return snap

    def _trim(self, now: float) -> None:
        """Patches no running rebuild needs, and accounts nobody lists, go (under the lock)."""
        oldest = min(self._reading, default=self._seq)
        self._patches = [p for p in self._patches if p[0] > oldest]
        for account_id in [a for a, t in self._used.items() if now - t > IDLE]:
            self._used.pop(account_id, None)
            self._snaps.pop(account_id, None)
