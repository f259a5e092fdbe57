"""Garbage collection: instances and security groups in AWS that no unfinished cluster owns.

The cluster machine handles its own clusters; this catches what is left of finished ones (e.g.
after a crash between a launch and its DB commit of a cluster that was then stopped).
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from overcast import clock, tags
from overcast.backends.base import ProviderError
from overcast.reconciler.backoff import Backoff
from overcast.reconciler.contexts import ContextFactory
from overcast.store.db import Database
from overcast.store.models import Account, Cluster
from overcast.store.notify import notify

log = logging.getLogger("overcast.reconciler")
ACTIVE = ("pending", "starting", "running", "stopping")


class Sweeper:
    def __init__(self, db: Database, contexts: ContextFactory, interval: float = 30.0) -> None:
        self.db, self.contexts, self.interval = db, contexts, interval
        self._last = -interval
        self.backoff = Backoff(base=interval, cap=600.0)  # per (account, region)

    def maybe_sweep(self) -> None:
        if clock.monotonic() - self._last < self.interval:
            return
        self._last = clock.monotonic()
        self.sweep()

    def sweep(self) -> None:
        with self.db.session() as session:
            places = session.execute(select(Cluster.account_id, Cluster.region).distinct()).all()
            for account_id, region in places:
                key = (account_id, region)
                if not self.backoff.ready(key):
                    continue
                account = session.get(Account, account_id)
                try:
                    self._sweep_one(session, account, region)
                    self.backoff.succeeded(key)
                except Exception as exc:  # one account's failure must not stop the others
                    session.rollback()
                    self.backoff.failed(key)
                    if isinstance(exc, ProviderError):
                        log.warning("sweep of %s in %s failed: %s", account.slug, region, exc)
                    else:
                        log.exception("sweep of %s in %s failed", account.slug, region)

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
