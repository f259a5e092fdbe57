"""Cluster routes: create, list, show, scale, stop, client credentials, logs."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field, ValidationInfo, field_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer, selectinload

from overcast import crypto, options
from overcast.security import generate_cluster_tls
from overcast.server import idempotency, listcache
from overcast.server.auth import AccountAccess, db_session, hash_token, member_of
from overcast.server.services import envs
from overcast.server.views import cluster_view
from overcast.store.db import Database
from overcast.store.models import Backend, Cluster, IdempotencyKey
from overcast.store.notify import notify

router = APIRouter(prefix="/accounts/{slug}/clusters", tags=["clusters"])
# Lists: instances in one query (not one per cluster), and no secret columns read at all.
_LIST_LOADS = (selectinload(Cluster.instances), selectinload(Cluster.account),
               defer(Cluster.tls_encrypted), defer(Cluster.token_encrypted))
ACTIVE_STATES = ("pending", "starting", "running", "stopping")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MAX_WORKERS = 1000  # issue 11: clusters of 1,000 workers
MAX_PAGE = listcache.MAX_PAGE  # clusters per list response


class ClusterCreate(BaseModel):
    name: str | None = None
    n_workers: int = Field(default=4)
    backend_options: dict[str, Any] | None = None
    worker_gpu: int | None = None
    scheduler_vm_types: list[str] | None = None
    worker_vm_types: list[str] | None = None
    idle_timeout: str | float | None = None
    no_client_timeout: str | float | None = None
    # A named software environment, or the client's packages (package sync); see
    # docs/software-environments.md. Neither: the VM image's own packages.
    software: str | None = None
    package_sync: dict[str, Any] | None = None

    @field_validator("idle_timeout", "no_client_timeout")
    @classmethod
    def _duration(cls, value: str | float | None, info: ValidationInfo) -> str | float | None:
        # 422 naming the field: "", "1e400", "soon" or a negative number is no duration.
        if value is not None:
            options.check_duration(value, info.field_name)
        return value


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


def wake(request: Request, look: bool = True, at_once: bool = True) -> None:
    """Wake the reconciler; `look=False`: a report that needs no new look at AWS;
    `at_once=False`: a pass within the busy interval is soon enough (a worker's report)."""
    reconciler = getattr(request.app.state, "reconciler", None)
    if reconciler is not None:
        reconciler.wake(look=look, at_once=at_once)


@router.post("", status_code=201, responses={
    200: {"description": "A retry of an earlier create (same Idempotency-Key): that cluster."}})
def create_cluster(body: ClusterCreate, request: Request, response: Response,
                   access: AccountAccess = Depends(member_of),
                   session: Session = Depends(db_session),
                   idempotency_key: str | None = Header(
                       None, description="A uuid the client makes once per cluster and "
                                         "resends on retries: one cluster per key.")) -> dict:
    account = access.account
    key, digest = idempotency.check_key(idempotency_key), idempotency.request_hash(body)
    if (earlier := idempotency.earlier_cluster(session, account.id, key, digest)) is not None:
        return replayed(earlier, response, request)
    name = body.name if body.name is not None else f"{account.slug}-{secrets.token_hex(3)}"
    if not _NAME.match(name):
        raise HTTPException(400, f"Cluster name {name!r} is not valid: use lowercase letters, "
                                 f"digits and '-', up to 63 characters (or no name).")
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
        if (earlier := idempotency.earlier_cluster(session, account.id, key, digest)):
            # A duplicate of this request made it meanwhile.
            return replayed(earlier, response, request)
        raise HTTPException(409, f"A cluster named {name!r} is already {taken.state}: "
                                 f"pick another name or stop it first.")
    try:
        software = envs.for_cluster(session, account, body.software, body.package_sync)
    except envs.EnvError as exc:
        session.rollback()
        raise HTTPException(exc.status, exc.message) from None
    token = secrets.token_urlsafe(32)
    tls = generate_cluster_tls(name)
    cluster = Cluster(account_id=account.id, name=name,
                      options=opts.to_dict() | ({"software": software} if software else {}),
                      region=opts.region, zone=opts.zone, n_workers=n_workers,
                      token_hash=hash_token(token), token_encrypted=crypto.encrypt(token),
                      tls_encrypted=crypto.encrypt(json.dumps(asdict(tls))))
    try:
        session.add(cluster)
        session.flush()
        idempotency.remember(session, account.id, key, digest, cluster)
        notify(session, account.id, "cluster-requested",
               f"Cluster requested: {n_workers} worker(s) in {opts.region}"
               + (f" zone {opts.zone}" if opts.zone else ""), cluster=cluster)
        if software:
            level, message = envs.cluster_note(software)
            notify(session, account.id, "cluster-software", message, level=level,
                   cluster=cluster)
        session.commit()
    except IntegrityError:
        # The same key raced in from a duplicate of this request and won: answer with its
        # cluster (this one's rows are rolled back; nothing half-made stays).
        session.rollback()
        earlier = idempotency.earlier_cluster(session, account.id, key, digest)
        if earlier is None:
            raise
        return replayed(earlier, response, request)
    lists_show(request, cluster)
    wake(request)
    return cluster_view(cluster)


def json_in_thread(data: Any) -> Response:
    """The JSON body made here, in the request's worker thread: a long list encoded by the
    framework would be encoded in the event loop, and /health would wait behind it."""
    return Response(json.dumps(data, separators=(",", ":")), media_type="application/json")


def list_item(cluster: Cluster) -> bytes | None:
    """The cluster as the default (active) list shows it; None if it is not in that list."""
    if cluster.state not in ACTIVE_STATES:
        return None
    return json.dumps(cluster_view(cluster, with_instances=False),
                      separators=(",", ":")).encode()


def lists_show(request: Request, cluster: Cluster) -> None:
    """After a commit: the list fast path shows this cluster as it is now, no rebuild."""
    listcache.cluster_changed(request, cluster.account_id, cluster.id, list_item(cluster))


def active_items(db: Database, account_id: int) -> list[tuple[int, bytes]] | None:
    """The account's default list as (id, item) newest first, for the list fast path
    (overcast.server.clusterlists); None if it does not fit one page."""
    with db.session() as session:
        rows = session.scalars(
            select(Cluster).where(Cluster.account_id == account_id,
                                  Cluster.state.in_(ACTIVE_STATES))
            .options(*_LIST_LOADS).order_by(Cluster.id.desc()).limit(MAX_PAGE + 1)).all()
        if len(rows) > MAX_PAGE:
            return None
        return [(r.id, list_item(r)) for r in rows]


def replayed(cluster: Cluster, response: Response, request: Request | None = None) -> dict:
    if request is not None:
        listcache.unchanged(request)  # the earlier create already showed it
    response.status_code = 200
    response.headers["Idempotent-Replayed"] = "true"
    return cluster_view(cluster)


@router.get("", response_model=list[dict[str, Any]], responses={200: {"headers": {
    "X-Next-After": {"description": "More clusters follow: pass this as `after`."}}}})
def list_clusters(access: AccountAccess = Depends(member_of),
                  session: Session = Depends(db_session),
                  idempotency_key: str | None = Query(
                      None, max_length=128, description="Only the cluster a create with this "
                      "Idempotency-Key made (a client whose create got no answer looks it up)."),
                  state: Literal["active", "all"] = Query(
                      "active", description="`active`: pending, starting, running or stopping "
                      "(the default); `all`: finished (stopped, error) ones too."),
                  limit: int = Query(MAX_PAGE, ge=1, le=MAX_PAGE,
                                     description="At most this many, newest first."),
                  after: int | None = Query(None, ge=1, le=2**31 - 1, description=(
                      "Only clusters older than this id (the last page's X-Next-After)."))
                  ) -> Response:
    query = select(Cluster).where(Cluster.account_id == access.account.id)
    if idempotency_key is not None:  # whatever became of that create: any state
        query = query.join(IdempotencyKey, IdempotencyKey.cluster_id == Cluster.id).where(
            IdempotencyKey.account_id == access.account.id,
            IdempotencyKey.key == idempotency_key)
    elif state == "active":
        query = query.where(Cluster.state.in_(ACTIVE_STATES))
    if after is not None:
        query = query.where(Cluster.id < after)
    query = query.options(*_LIST_LOADS)
    rows = session.scalars(query.order_by(Cluster.id.desc()).limit(limit)).all()
    response = json_in_thread([cluster_view(r, with_instances=False) for r in rows])
    if len(rows) == limit:
        response.headers["X-Next-After"] = str(rows[-1].id)
    return response


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
    lists_show(request, cluster)
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
    lists_show(request, cluster)
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
