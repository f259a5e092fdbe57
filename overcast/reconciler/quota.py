"""Quota errors: scaling stops, the cluster is kept, and the notification names the quota.

A reached quota (vCPUs, spot requests, security groups...) is not a zone's capacity and not a
reason to end a cluster: what runs keeps running, launches wait with backoff (30 s doubling to
10 min) and resume by themselves once the operator raises the quota.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from overcast.backends.base import QuotaExceeded
from overcast.reconciler.backoff import Backoff
from overcast.store.models import Cluster
from overcast.store.notify import notify


class QuotaHold:
    def __init__(self) -> None:
        self.backoff = Backoff(base=30.0, cap=600.0)
        self.last: dict[int, str] = {}  # cluster id -> the quota last reached

    def ready(self, cluster_id: int) -> bool:
        return self.backoff.ready(cluster_id)

    def hit(self, session: Session, cluster: Cluster, exc: QuotaExceeded) -> None:
        self.last[cluster.id] = exc.quota
        running = sum(1 for i in cluster.instances if i.state == "ready")
        self.hold(session, cluster, "quota-exceeded",
                  f"Scaling stopped: the AWS quota \"{exc.quota}\" is reached ({exc.code}). "
                  f"Raise it in the Service Quotas console; the cluster keeps its {running} "
                  "running instance(s) and adds the rest once the quota allows.")

    def hold(self, session: Session, cluster: Cluster, event_type: str, message: str) -> None:
        """Launches for this cluster wait (backoff); the user is told why, once."""
        self.backoff.failed(cluster.id)
        notify(session, cluster.account_id, event_type, message, level="warning",
               cluster=cluster)
        session.commit()

    def cleared(self, cluster_id: int) -> None:
        self.backoff.succeeded(cluster_id)
        self.last.pop(cluster_id, None)

    def forget(self, cluster_id: int) -> None:
        self.cleared(cluster_id)
