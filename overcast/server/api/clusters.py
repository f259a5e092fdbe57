"""Cluster routes: create, list, show, scale, stop, client credentials, logs."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from overcast import crypto, options
from overcast.security import generate_cluster_tls
from overcast.server.auth import AccountAccess, db_session, hash_token, member_of
from overcast.server.views import cluster_view
from overcast.store.models import Backend, Cluster
from overcast.store.notify import notify

router = APIRouter(prefix="/accounts/{slug}/clusters", tags=["clusters"])
ACTIVE_STATES = ("pending", "starting", "running", "stopping")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MAX_WORKERS = 500


class ClusterCreate(BaseModel):
    name: str | None = None
    n_workers: int = Field(default=4)
    backend_options: dict[str, Any] | None = None
    worker_gpu: int | None = None
    scheduler_vm_types: list[str] | None = None
    worker_vm_types: list[str] | None = None
    idle_timeout: str | float | None = None
    no_client_timeout: str | float | None = None


class ScaleRequest(BaseModel):
    n_workers: int
    # Workers (instance ids, which are also their dask worker names) to remove: Adaptive
    # retires the ones it chose on the scheduler, then asks for exactly those to go.
    remove: list[str] = Field(default_factory=list)


def check_n_workers(n: int) -> int:
    if not 0 <= n <= MAX_WORKERS:
        raise HTTPException(400, f"n_workers={n} is out of range: use 0 to {MAX_WORKERS}.")
    return n


def account_defaults(session: Session, account_id: int) -> dict[str, Any]:
    backend = session.scalar(select(Backend).where(Backend.account_id == account_id))
    if backend is None:
        return {}
    return {"region": backend.region, "zone": backend.zone, "firewall": backend.firewall}


def find_cluster(session: Session, account_id: int, name: str) -> Cluster:
    """The newest cluster of that name in the account."""
    row = session.scalar(select(Cluster).where(Cluster.account_id == account_id,
                                               Cluster.name == name)
                         .order_by(Cluster.id.desc()).limit(1))
    if row is None:
        raise HTTPException(404, f"No cluster named {name!r} in this account.")
    return row


def wake(request: Request) -> None:
    reconciler = getattr(request.app.state, "reconciler", None)
    if reconciler is not None:
        reconciler.wake()


@router.post("", status_code=201)
def create_cluster(body: ClusterCreate, request: Request,
                   access: AccountAccess = Depends(member_of),
                   session: Session = Depends(db_session)) -> dict:
    account = access.account
    name = body.name or f"{account.slug}-{secrets.token_hex(3)}"
    if not _NAME.match(name):
        raise HTTPException(400, f"Cluster name {name!r} is not valid: use lowercase letters, "
                                 f"digits and '-', up to 63 characters.")
    n_workers = check_n_workers(body.n_workers)
    try:
        opts = options.resolve(
            body.backend_options, account_defaults=account_defaults(session, account.id),
            worker_gpu=body.worker_gpu, scheduler_vm_types=body.scheduler_vm_types,
            worker_vm_types=body.worker_vm_types, idle_timeout=body.idle_timeout,
            no_client_timeout=body.no_client_timeout)
    except options.OptionError as exc:
        raise HTTPException(400, str(exc)) from None
    taken = session.scalar(select(Cluster).where(Cluster.account_id == account.id,
                                                 Cluster.name == name,
                                                 Cluster.state.in_(ACTIVE_STATES)))
    if taken is not None:
        raise HTTPException(409, f"A cluster named {name!r} is already {taken.state}: "
                                 f"pick another name or stop it first.")
    token = secrets.token_urlsafe(32)
    tls = generate_cluster_tls(name)
    cluster = Cluster(account_id=account.id, name=name, options=opts.to_dict(),
                      region=opts.region, zone=opts.zone, n_workers=n_workers,
                      token_hash=hash_token(token), token_encrypted=crypto.encrypt(token),
                      tls_encrypted=crypto.encrypt(json.dumps(asdict(tls))))
    session.add(cluster)
    session.flush()
    notify(session, account.id, "cluster-requested",
           f"Cluster requested: {n_workers} worker(s) in {opts.region}"
           + (f" zone {opts.zone}" if opts.zone else ""), cluster=cluster)
    session.commit()
    wake(request)
    return cluster_view(cluster)


@router.get("")
def list_clusters(access: AccountAccess = Depends(member_of),
                  session: Session = Depends(db_session)) -> list[dict]:
    rows = session.scalars(select(Cluster).where(Cluster.account_id == access.account.id)
                           .order_by(Cluster.id.desc())).all()
    return [cluster_view(r, with_instances=False) for r in rows]


@router.get("/{name}")
def get_cluster(name: str, access: AccountAccess = Depends(member_of),
                session: Session = Depends(db_session)) -> dict:
    return cluster_view(find_cluster(session, access.account.id, name))


@router.post("/{name}/scale")
def scale_cluster(name: str, body: ScaleRequest, request: Request,
                  access: AccountAccess = Depends(member_of),
                  session: Session = Depends(db_session)) -> dict:
    cluster = find_cluster(session, access.account.id, name)
    if cluster.state not in ("pending", "starting", "running"):
        raise HTTPException(409, f"Cluster {name!r} is {cluster.state}; start a new one.")
    n = check_n_workers(body.n_workers)
    live = ("requested", "launched", "booting", "ready")
    # "failed" too: a retired worker's instance may have gone (and been taken for a failure)
    # a moment before this request; it was removed on purpose, so it is no failure.
    removed = [i for i in cluster.instances if i.role == "worker" and i.aws_id in body.remove
               and i.state in (*live, "failed")]
    for row in removed:
        row.desired_state = "stopped"  # the reconciler terminates it
    if removed:
        notify(session, access.account.id, "cluster-scale",
               f"Removing worker(s) {', '.join(r.aws_id for r in removed)}", cluster=cluster)
    if n != cluster.n_workers:
        notify(session, access.account.id, "cluster-scale",
               f"Scaling from {cluster.n_workers} to {n} worker(s)", cluster=cluster)
        cluster.n_workers = n
    session.commit()
    wake(request)
    return cluster_view(cluster)


@router.delete("/{name}", status_code=202)
def stop_cluster(name: str, request: Request, access: AccountAccess = Depends(member_of),
                 session: Session = Depends(db_session)) -> dict:
    cluster = find_cluster(session, access.account.id, name)
    if cluster.state in ("pending", "starting", "running") and \
            cluster.desired_state != "stopped":
        cluster.desired_state = "stopped"  # the reconciler moves `state` to stopping
        notify(session, access.account.id, "cluster-stop",
               f"Stop requested by {access.user.username}", cluster=cluster)
    session.commit()
    wake(request)
    return cluster_view(cluster)


@router.get("/{name}/credentials")
def client_credentials(name: str, access: AccountAccess = Depends(member_of),
                       session: Session = Depends(db_session)) -> dict:
    """The client certificate for the user's own dask Client (the one secret we hand out,
    to members of the cluster's account only)."""
    cluster = find_cluster(session, access.account.id, name)
    tls = json.loads(crypto.decrypt(cluster.tls_encrypted))
    return {"ca_cert": tls["ca_cert"], "cert": tls["client_cert"], "key": tls["client_key"]}


@router.get("/{name}/logs")
def cluster_logs(name: str, request: Request, access: AccountAccess = Depends(member_of),
                 session: Session = Depends(db_session)) -> dict:
    cluster = find_cluster(session, access.account.id, name)
    streams = request.app.state.log_reader(session, cluster)
    return {"streams": streams}
