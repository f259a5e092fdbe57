"""Agents' heartbeats: noted in memory by the route, written in one batch every FLUSH_SECONDS.

Why: a write per heartbeat is a write transaction per VM every interval; 1,000 workers on one
SQLite file queue on its single writer. The route only reads (the bearer and the instance, for
its answer); this writes `instances.last_heartbeat` for every VM heard since the last flush in
one executemany, and the schedulers' activity (`clusters.activity`, `last_activity_at`) that
drives the idle and no-client timeouts. The reconciler sees a heartbeat up to FLUSH_SECONDS
late, which the heartbeat timeout allows for (docs/liveness.md).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, or_, update

from overcast.server.flusher import PeriodicFlusher
from overcast.store.db import Database
from overcast.store.models import Cluster, Instance

log = logging.getLogger("overcast.server.heartbeats")
FLUSH_SECONDS = 2.0


def merge_activity(stats: dict[str, Any], body: dict[str, Any], at: datetime) -> dict[str, Any]:
    """A scheduler's heartbeat applied to the cluster's activity (what the timeouts read)."""
    stats = {**stats, **body}
    if body.get("clients") == 0:
        since = stats.setdefault("no_client_since", at.timestamp())
        stats["no_client_seconds"] = at.timestamp() - since
    elif body.get("clients"):
        stats.pop("no_client_since", None)
        stats["no_client_seconds"] = 0.0
    return stats


class Heartbeats(PeriodicFlusher):
    thread_name = "overcast-heartbeats"

    def __init__(self, db: Database, every: float = FLUSH_SECONDS) -> None:
        super().__init__(every)
        self._db = db
        self._lock = threading.Lock()
        self._seen: dict[int, datetime] = {}  # instance row id -> last heartbeat
        self._schedulers: dict[int, list[tuple[datetime, dict[str, Any]]]] = {}

    def beat(self, instance_id: int, at: datetime, cluster_id: int | None = None,
             activity: dict[str, Any] | None = None) -> None:
        """Note a heartbeat; a scheduler's carries its cluster's activity."""
        with self._lock:
            self._seen[instance_id] = at
            if cluster_id is not None and activity is not None:
                self._schedulers.setdefault(cluster_id, []).append((at, activity))

    def flush(self) -> int:
        """Write what was noted since the last flush, in one transaction; the rows written."""
        with self._lock:
            seen, self._seen = self._seen, {}
            schedulers, self._schedulers = self._schedulers, {}
        if not seen and not schedulers:
            return 0
        try:
            with self._db.session() as session:
                if seen:
                    table = Instance.__table__
                    # Never back in time (the ready report writes it too).
                    stmt = (update(table).where(table.c.id == bindparam("row_id"))
                            .where(or_(table.c.last_heartbeat.is_(None),
                                       table.c.last_heartbeat < bindparam("at")))
                            .values(last_heartbeat=bindparam("at")))
                    session.execute(stmt, [{"row_id": k, "at": t} for k, t in seen.items()])
                for cluster_id, beats in schedulers.items():
                    cluster = session.get(Cluster, cluster_id)
                    if cluster is None:
                        continue
                    stats = dict(cluster.activity or {})
                    for at, body in beats:
                        stats = merge_activity(stats, body, at)
                        if body.get("tasks"):
                            cluster.last_activity_at = at
                    cluster.activity = stats
        except Exception:
            log.warning("could not record heartbeats; will retry", exc_info=True)
            with self._lock:  # newer beats noted meanwhile win
                self._seen = {**seen, **self._seen}
                for cluster_id, beats in schedulers.items():
                    self._schedulers[cluster_id] = beats + self._schedulers.get(cluster_id, [])
            return 0
        return len(seen) + len(schedulers)
