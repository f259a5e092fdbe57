"""Garbage collection: instances and security groups in AWS that no unfinished cluster owns.

The cluster machine handles its own clusters; this catches what is left of finished ones (e.g.
after a crash between a launch and its DB commit of a cluster that was then stopped).
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import select

from overcast import tags
from overcast.backends.base import ProviderError
from overcast.reconciler.contexts import ContextFactory
from overcast.store.db import Database
from overcast.store.models import Account, Cluster
from overcast.store.notify import notify

log = logging.getLogger("overcast.reconciler")
ACTIVE = ("pending", "starting", "running", "stopping")


class Sweeper:
    def __init__(self, db: Database, contexts: ContextFactory, interval: float = 30.0) -> None:
        self.db, self.contexts, self.interval = db, contexts, interval
        self._last = 0.0

    def maybe_sweep(self) -> None:
        if time.monotonic() - self._last < self.interval:
            return
        self._last = time.monotonic()
        self.sweep()

    def sweep(self) -> None:
        with self.db.session() as session:
            places = session.execute(select(Cluster.account_id, Cluster.region).distinct()).all()
            for account_id, region in places:
                account = session.get(Account, account_id)
                try:
                    self._sweep_one(session, account, region)
                except ProviderError as exc:
                    log.warning("sweep of %s in %s failed: %s", account.slug, region, exc)

    def _sweep_one(self, session, account: Account, region: str) -> None:
        target = self.contexts.for_account(session, account, region)
        active = set(session.scalars(select(Cluster.id).where(
            Cluster.account_id == account.id, Cluster.state.in_(ACTIVE))).all())
        orphans: dict[int, list[str]] = {}
        for info in self.contexts.provider.list_instances(target.ctx,
                                                          account=account.slug):
            cluster_id = int(info.tags.get(tags.CLUSTER, "0") or 0)
            if cluster_id and cluster_id not in active:
                orphans.setdefault(cluster_id, []).append(info.aws_id)
        for cluster_id, ids in orphans.items():
            self.contexts.provider.terminate(target.ctx, ids)
            self.contexts.provider.close_firewall(target.ctx, cluster_id)
            cluster = session.get(Cluster, cluster_id)
            notify(session, account.id, "orphans-removed",
                   f"Terminated {len(ids)} instance(s) left over from a finished cluster",
                   level="warning", cluster=cluster)
        session.commit()
