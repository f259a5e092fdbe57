"""Notifications: every provisioning step and error, per account (and cluster)."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from overcast.store.models import Cluster, Notification

log = logging.getLogger("overcast.notifications")


def notify(session: Session, account_id: int, event_type: str, message: str, *,
           level: str = "info", cluster: Cluster | None = None) -> Notification:
    row = Notification(account_id=account_id, event_type=event_type, message=message,
                       level=level, cluster_id=cluster.id if cluster else None,
                       cluster_name=cluster.name if cluster else None)
    session.add(row)
    log.log(logging.ERROR if level == "error" else logging.INFO, "[%s] %s%s", event_type,
            f"{cluster.name}: " if cluster else "", message)
    return row
