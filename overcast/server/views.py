"""What the API shows of each row: never a secret (tokens, keys, TLS keys stay inside)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import object_session

from overcast import crypto
from overcast.dashboardcred import dashboard_token, link_with_token
from overcast.store.models import Backend, BackendResource, Cluster, Instance, Notification

LIVE_INSTANCE_STATES = ("requested", "launched", "booting", "ready")


def iso(value) -> str | None:
    return value.isoformat() + "Z" if value else None


def instance_view(row: Instance) -> dict[str, Any]:
    return {"aws_id": row.aws_id, "role": row.role, "zone": row.zone, "subnet_id": row.subnet_id,
            "spot": row.spot, "instance_type": row.instance_type, "state": row.state,
            "desired_state": row.desired_state,
            "reason": row.reason, "address": row.address,
            "last_heartbeat": iso(row.last_heartbeat)}


def dashboard_link(row: Cluster, with_credential: bool) -> str | None:
    """The dask dashboard's link; with its token only in a cluster's detail for its account's
    members (every caller of a detail view has checked membership). The stored link never
    holds the token: it is derived from the encrypted cluster token when shown."""
    if not row.dashboard_link or not with_credential:
        return row.dashboard_link
    return link_with_token(row.dashboard_link, dashboard_token(crypto.decrypt(row.token_encrypted)))


def cluster_view(row: Cluster, with_instances: bool = True) -> dict[str, Any]:
    """A cluster's JSON: with `with_instances` its detail (instances, the dashboard's
    credential), else the short form of lists and list streams."""
    workers = [i for i in row.instances if i.role == "worker"]
    view = {
        "id": row.id, "name": row.name, "account": row.account.slug, "state": row.state,
        "desired_state": row.desired_state,
        "reason": row.reason, "n_workers": row.n_workers,
        "workers_ready": sum(1 for i in workers if i.state == "ready"),
        "region": row.region, "zone": row.zone,
        "scheduler_address": row.scheduler_address,
        "dashboard_link": dashboard_link(row, with_credential=with_instances),
        "options": row.options, "created_at": iso(row.created_at),
        "started_at": iso(row.started_at), "stopped_at": iso(row.stopped_at),
        "last_activity_at": iso(row.last_activity_at),  # when the scheduler last had tasks
    }
    if with_instances:
        view["instances"] = [instance_view(i) for i in row.instances]
        view["last_event"] = last_event(row)
    return view


def last_event(row: Cluster) -> dict[str, Any] | None:
    """The cluster's newest notification: what a start's live view shows under its counts
    (e.g. the VM image or software environment build it waits for)."""
    session = object_session(row)
    newest = session.scalar(select(Notification).where(
        Notification.account_id == row.account_id, Notification.cluster_id == row.id)
        .order_by(Notification.id.desc()).limit(1)) if session is not None else None
    if newest is None:
        return None
    return {"time": iso(newest.last_at or newest.time), "level": newest.level,
            "event_type": newest.event_type, "message": newest.message}


def notification_view(row: Notification) -> dict[str, Any]:
    return {"id": row.id, "time": iso(row.time), "level": row.level,
            "event_type": row.event_type, "cluster": row.cluster_name, "message": row.message,
            "count": row.count or 1, "last_at": iso(row.last_at or row.time)}


def backend_view(row: Backend | None, resources: list[BackendResource]) -> dict[str, Any]:
    base = {"kind": "hosted", "region": "us-east-1", "zone": None, "firewall": None,
            "registry_type": "ecr", "registry_username": None, "registry_repository": None,
            "aws_access_key_id": None,
            "state": "ready", "reason": None}
    if row is not None:
        base.update(kind=row.kind, region=row.region, zone=row.zone, firewall=row.firewall,
                    registry_type=row.registry_type, registry_username=row.registry_username,
                    registry_repository=row.registry_repository,
                    aws_access_key_id=row.key_id_masked, state=row.state, reason=row.reason)
    base["resources"] = [{"kind": r.kind, "aws_id": r.aws_id, "zone": r.zone,
                          "region": r.region, "state": r.state} for r in resources]
    return base
