"""Workers' ready reports, written by group commit: one transaction for every report that
arrived while the previous one was being written.

Why: a ready report is a write (the instance row, a notification). 1,000 workers reporting
within seconds were 1,000 write transactions queueing on SQLite's one writer lock, each
waiter sleeping in SQLite's busy handler: ~60 reports/s, and heartbeats timed out behind them.
Here the route checks the report (bearer, identity document, row) in a thread, gives its
admission slot back and awaits the batch it joined; it answers only once that batch is
committed, so an answered report is a recorded one (a failed write is a 500: the agent
retries). A cluster's reports of one batch make one notification ("N workers ready: ...").
Schedulers report on the route's own path: one per cluster, and their address must be
committed before their workers' long-polls are answered.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from anyio import to_thread

from overcast.store.db import Database
from overcast.store.models import Cluster, Instance, utcnow
from overcast.store.notify import notify

NAMED = 5  # instance ids a batch's notification names


@dataclass(frozen=True)
class Report:
    instance_id: int  # the row's id
    cluster_id: int
    address: str


def record(instance: Instance, address: str) -> None:
    """A ready report on its row: the reconciler (the only writer of `state`) applies it."""
    if instance.state in ("requested", "launched", "booting"):
        instance.reported_state = "ready"
    instance.address = address
    instance.last_heartbeat = utcnow()


def message(aws_ids: list[str]) -> str:
    if len(aws_ids) == 1:
        return f"Worker {aws_ids[0]} ready"
    more = f" and {len(aws_ids) - NAMED} more" if len(aws_ids) > NAMED else ""
    return f"{len(aws_ids)} workers ready: {', '.join(aws_ids[:NAMED])}{more}"


class ReadyReports:
    """The batches of one event loop (the server's)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pending: list[tuple[Report, asyncio.Future]] = []
        self._writer: asyncio.Task | None = None

    async def write(self, report: Report) -> None:
        """Returns once the report is committed; raises what the write raised."""
        done = asyncio.get_running_loop().create_future()
        self._pending.append((report, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_batches())
        await done

    async def _write_batches(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await to_thread.run_sync(self._commit, [r for r, _ in batch])
            except Exception as exc:  # noqa: BLE001 (each waiting route answers with it)
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    def _commit(self, reports: list[Report]) -> None:
        with self._db.session() as session:
            ready: dict[int, list[str]] = {}
            for report in reports:
                instance = session.get(Instance, report.instance_id)
                if instance is None:  # deleted meanwhile: nothing to record
                    continue
                record(instance, report.address)
                ready.setdefault(report.cluster_id, []).append(instance.aws_id or "?")
            for cluster_id, aws_ids in ready.items():
                cluster: Any = session.get(Cluster, cluster_id)
                if cluster is not None:
                    notify(session, cluster.account_id, "worker-ready", message(aws_ids),
                           cluster=cluster)
            session.commit()
