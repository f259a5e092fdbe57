"""Which instances are dead: agent reports applied, silence confirmed before a terminate.

Silence alone is not enough (docs/liveness.md): heartbeat age counts only time the control
plane was up (Timeouts + Liveness), and a silent instance is terminated only when the cloud
says it is not running, or it is the scheduler (its heartbeat is the only sign of it), or it is
a worker the scheduler no longer counts either.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from overcast.backends.base import InstanceInfo
from overcast.reconciler.timeouts import Timeouts
from overcast.store.models import Cluster, Instance
from overcast.store.notify import notify

LIVE = ("requested", "launched", "booting", "ready")
AWS_GONE = ("shutting-down", "terminated", "stopping", "stopped")


def apply_reports(cluster: Cluster) -> list[Instance]:
    """What agents reported since the last pass (the API only records reports); returns the
    rows that failed by their agent's word just now."""
    failed = []
    for row in cluster.instances:
        if row.reported_state == "ready" and row.state in ("requested", "launched", "booting"):
            row.state = "ready"
        elif row.reported_state == "failed" and row.state in LIVE:
            row.state, row.reason = "failed", row.reported_reason or "its agent reported failure"
            failed.append(row)
    return failed


def confirmed_dead(session: Session, cluster: Cluster, timeouts: Timeouts,
                   actual: dict[str, InstanceInfo]) -> list[Instance]:
    """The stale instances whose death is confirmed; the others get a warning (once)."""
    dead = []
    for row in timeouts.stale_instances(cluster):
        info = actual.get(row.aws_id or "")
        if info is None or info.state in AWS_GONE or row.state != "ready" \
                or row.role == "scheduler":
            dead.append(row)
        elif _scheduler_counts_workers(cluster, timeouts):
            notify(session, cluster.account_id, "heartbeat-missing",
                   f"Worker {row.aws_id} sends no heartbeats, but it runs and the scheduler "
                   "still counts every worker: keeping it", level="warning", cluster=cluster)
        else:
            dead.append(row)
    return dead


def _scheduler_counts_workers(cluster: Cluster, timeouts: Timeouts) -> bool:
    scheduler = next((i for i in cluster.instances
                      if i.role == "scheduler" and i.state == "ready"), None)
    if scheduler is None or scheduler.last_heartbeat is None:
        return False
    if timeouts.up_since(scheduler.last_heartbeat) > timedelta(seconds=timeouts.heartbeat):
        return False  # the scheduler's word is stale too
    ready = sum(1 for i in cluster.instances if i.role == "worker" and i.state == "ready")
    return int((cluster.activity or {}).get("workers") or 0) >= ready
