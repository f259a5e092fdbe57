"""Routes the agent on each VM calls, authenticated by its cluster's token; the instance routes
also by the VM's signed identity document (server/identity.py).

Quiet by design: the scheduler address is a long-poll that waits in the event loop
(server/scheduler_watch.py), and heartbeats are only noted, then written in batches
(server/heartbeats.py)."""

from __future__ import annotations

import ipaddress
import json
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from overcast import crypto
from overcast.security import issue_dashboard_cert
from overcast.server import identity, readyreports
from overcast.server.api.clusters import wake
from overcast.server.auth import bearer, db_session, tokens_match
from overcast.server.readyreports import Report
from overcast.server.scheduler_watch import MAX_WAIT, answer_of, release_slot, settled
from overcast.server.validation import fits_db
from overcast.store.models import Cluster, Instance, utcnow
from overcast.store.notify import notify

router = APIRouter(prefix="/agent/clusters/{cluster_id}", tags=["agent"])
GONE_STATES = ("stopping", "stopped", "error")


NOT_FOUND = "No such cluster for this token."


def agent_cluster(cluster_id: int, request: Request,
                  session: Session = Depends(db_session)) -> Cluster:
    # The credential first (401 without one); an id that cannot exist is simply not found.
    token = bearer(request)
    if request.app.state.cluster_tokens.check(cluster_id, token) is False:
        raise HTTPException(404, NOT_FOUND)
    cluster = session.get(Cluster, cluster_id) if fits_db(cluster_id) else None
    if cluster is None or not tokens_match(token, cluster.token_hash):
        raise HTTPException(404, NOT_FOUND)
    request.app.state.cluster_tokens.remember(cluster.id, cluster.token_hash)
    return cluster


def cluster_instance(session: Session, cluster: Cluster, aws_id: str,
                     request: Request | None = None) -> Instance:
    """The instance row of `aws_id`; with `request`, only once its identity document proves
    the caller is that instance (403 otherwise)."""
    if request is not None:
        identity.require(request, cluster, aws_id)
    row = session.scalar(select(Instance).where(Instance.cluster_id == cluster.id,
                                                Instance.aws_id == aws_id))
    if row is None and cluster.state not in GONE_STATES:
        # Launched but not recorded yet (a control plane killed between RunInstances and its
        # commit: the reconciler finds it again by client token): the agent retries on 503.
        raise HTTPException(503, f"Instance {aws_id} is not recorded yet; retry shortly.",
                            headers={"Retry-After": "2"})
    if row is None:
        raise HTTPException(404, f"Instance {aws_id} is not part of this cluster.")
    return row


# Bounds that fit the columns (String(255)) and JSON (finite numbers) on every database.
Address = Annotated[str, Field(max_length=255)]
Count = Annotated[int, Field(ge=0, le=2**31)]


class ReadyReport(BaseModel):
    address: Address
    dashboard_address: Address | None = None
    internal_address: Address | None = None  # inside the VPC, when it differs from `address`


class Heartbeat(BaseModel):
    workers: Count | None = None
    tasks: Count | None = None
    clients: Count | None = None
    idle_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None


class Failure(BaseModel):
    reason: str


@router.get("/tls")
def node_tls(cluster: Cluster = Depends(agent_cluster)) -> dict:
    tls = json.loads(crypto.decrypt(cluster.tls_encrypted))
    return {"ca_cert": tls["ca_cert"], "cert": tls["node_cert"], "key": tls["node_key"]}


class DashboardCertRequest(BaseModel):
    ips: list[str] = Field(min_length=1, max_length=4)


@router.post("/dashboard-cert")
def dashboard_cert(body: DashboardCertRequest,
                   cluster: Cluster = Depends(agent_cluster)) -> dict:
    """A certificate for the scheduler's HTTPS dashboard naming its addresses, signed by the
    cluster's CA (only that cluster's nodes hold the token; only its users trust the CA)."""
    try:
        ips = [ipaddress.ip_address(ip) for ip in body.ips]
    except ValueError:
        raise HTTPException(400, 'ips must be IP addresses, e.g. ["10.0.1.5"].') from None
    tls = json.loads(crypto.decrypt(cluster.tls_encrypted))
    cert, key = issue_dashboard_cert(tls["ca_cert"], tls["ca_key"], cluster.name, ips)
    return {"cert": cert, "key": key}


def _scheduler_answer(request: Request, cluster_id: int) -> dict:
    """The bearer's check and the current answer, in a short session of its own."""
    with request.app.state.db.session() as session:
        return answer_of(agent_cluster(cluster_id, request, session))


@router.get("/scheduler")
async def scheduler_address(cluster_id: int, request: Request,
                            wait: float = Query(0.0, ge=0, le=MAX_WAIT)) -> dict:
    """The scheduler's address. With `wait`, a long-poll: answered as soon as the address is
    known (or the cluster goes away), else after `wait` seconds with a null address. While
    waiting it holds no admission slot, thread or database connection."""
    answer = await to_thread.run_sync(_scheduler_answer, request, cluster_id)
    if settled(answer) or not wait:
        return answer
    release_slot(request.scope)
    found = await request.app.state.scheduler_watch.wait(cluster_id, wait)
    return found if found is not None else answer


def _check_ready(request: Request, cluster_id: int, aws_id: str,
                 body: ReadyReport) -> tuple[Report | None, str]:
    """The report checked (bearer, identity document, row), in a short session of its own. A
    scheduler's is recorded here and now; a worker's is returned, to join a batch."""
    with request.app.state.db.session() as session:
        cluster = agent_cluster(cluster_id, request, session)
        instance = cluster_instance(session, cluster, aws_id, request)
        action = action_for(cluster, instance)
        if instance.role != "scheduler":
            return Report(instance.id, cluster.id, body.address), action
        readyreports.record(instance, body.address)
        cluster.scheduler_address = body.address
        cluster.scheduler_internal_address = body.internal_address
        cluster.dashboard_link = body.dashboard_address
        notify(session, cluster.account_id, "scheduler-ready",
               f"Scheduler {aws_id} ready at {body.address}", cluster=cluster)
        session.commit()
        return None, action


async def _bearer_first(cluster_id: int, request: Request) -> None:
    """The credential checked before the body is (401/404 before 422), holding no session:
    in the event loop once the cluster's token hash is known (server/clustertokens.py)."""
    known = request.app.state.cluster_tokens.check(cluster_id, bearer(request))
    if known is False:
        raise HTTPException(404, NOT_FOUND)
    if known is None:
        await to_thread.run_sync(_bearer_in_db, cluster_id, request)


def _bearer_in_db(cluster_id: int, request: Request) -> None:
    with request.app.state.db.session() as session:
        agent_cluster(cluster_id, request, session)


@router.post("/instances/{aws_id}/ready", dependencies=[Depends(_bearer_first)])
async def instance_ready(cluster_id: int, aws_id: str, body: ReadyReport,
                         request: Request) -> dict:
    """Answered once recorded. A worker's report is written with the others that arrive
    meanwhile (server/readyreports.py); it waits for that without an admission slot."""
    report, action = await to_thread.run_sync(_check_ready, request, cluster_id, aws_id, body)
    if report is None:
        request.app.state.scheduler_watch.poke()  # the workers' long-polls answer now
    else:
        release_slot(request.scope)
        await request.app.state.ready_reports.write(report)
    # The reconciler applies the report; no new look at AWS is needed for it. A scheduler's
    # makes its cluster running (a user waits on it): a pass at once.
    wake(request, look=False, at_once=report is None)
    return {"action": action}


@router.post("/instances/{aws_id}/heartbeat")
def heartbeat(aws_id: str, body: Heartbeat, request: Request,
              cluster: Cluster = Depends(agent_cluster),
              session: Session = Depends(db_session)) -> dict:
    """Only reads: the beat is noted and written with others (server/heartbeats.py)."""
    instance = cluster_instance(session, cluster, aws_id, request)
    # A scheduler's activity as it sees it drives the idle and no-client timeouts.
    activity = body.model_dump(exclude_none=True) if instance.role == "scheduler" else None
    request.app.state.heartbeats.beat(instance.id, utcnow(), cluster.id, activity)
    return {"action": action_for(cluster, instance)}


@router.post("/instances/{aws_id}/failed")
def instance_failed(aws_id: str, body: Failure, request: Request,
                    cluster: Cluster = Depends(agent_cluster),
                    session: Session = Depends(db_session)) -> dict:
    instance = cluster_instance(session, cluster, aws_id, request)
    if instance.state in ("stopping", "terminated") or instance.desired_state == "stopped":
        return {"action": "stop"}  # it was being removed: its dask closing is no failure
    reason = body.reason[:500]
    instance.reported_state, instance.reported_reason = "failed", reason
    notify(session, cluster.account_id, "instance-failed",
           f"{instance.role.capitalize()} {aws_id} failed: {reason}", level="error",
           cluster=cluster)
    session.commit()
    wake(request)
    return {"action": "stop"}


def action_for(cluster: Cluster, instance: Instance) -> str:
    if cluster.state in GONE_STATES or instance.state in ("stopping", "terminated", "failed") \
            or instance.desired_state == "stopped":
        return "stop"
    return "continue"
