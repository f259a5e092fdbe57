"""Notifications: every provisioning step and error, per account (and cluster).

A repeat is one row with a count: when the newest notification of the same account, cluster
and event type has the same message, `notify` bumps its `count` and `last_at` instead of adding
a row (a cluster waiting on an unreachable cloud writes one row, not one per pass).
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from overcast.store.models import Cluster, Notification, utcnow

log = logging.getLogger("overcast.notifications")


def notify(session: Session, account_id: int, event_type: str, message: str, *,
           level: str = "info", cluster: Cluster | None = None) -> Notification:
    cluster_id = cluster.id if cluster else None
    last = _newest(session, account_id, cluster_id, event_type)
    if last is not None and last.message == message and last.level == level:
        last.count = (last.count or 1) + 1
        last.last_at = utcnow()
        log.debug("[%s] repeated (%d times)", event_type, last.count)
        return last
    row = Notification(account_id=account_id, event_type=event_type, message=message,
                       level=level, cluster_id=cluster_id,
                       cluster_name=cluster.name if cluster else None, count=1)
    session.add(row)
    log.log(logging.ERROR if level == "error" else logging.INFO, "[%s] %s%s", event_type,
            f"{cluster.name}: " if cluster else "", message)
    return row


def _newest(session: Session, account_id: int, cluster_id: int | None,
            event_type: str) -> Notification | None:
    same_cluster = (Notification.cluster_id.is_(None) if cluster_id is None
                    else Notification.cluster_id == cluster_id)
    # Rows added in this session but not flushed yet count too (autoflush is on).
    return session.scalar(select(Notification).where(
        Notification.account_id == account_id, same_cluster,
        Notification.event_type == event_type).order_by(Notification.id.desc()).limit(1))
