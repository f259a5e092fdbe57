"""Clusters pages (list, one cluster) and the live server-sent-event streams of the dashboard."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from overcast.server.api.clusters import find_cluster
from overcast.server.auth import db_session
from overcast.server.services import backend as service
from overcast.server.views import backend_view, cluster_view, notification_view
from overcast.server.web.session import Page, checked_form, page_member, render, stream_account
from overcast.store.models import Account, Cluster, Notification
from overcast.store.notify import notify

router = APIRouter(include_in_schema=False)
STREAM_SECONDS = 120.0  # then the stream ends and EventSource reconnects (bounded work)
POLL_SECONDS = 0.5
FINAL_BACKEND = ("ready", "error")  # "deleting" (teardown) keeps streaming


def clusters_snapshot(session: Session, account_id: int) -> list[dict[str, Any]]:
    rows = session.scalars(select(Cluster).where(Cluster.account_id == account_id)
                           .order_by(Cluster.id.desc()).limit(100))
    return [cluster_view(r, with_instances=False) for r in rows]


def cluster_snapshot(session: Session, account_id: int, name: str) -> dict[str, Any]:
    cluster = find_cluster(session, account_id, name)
    notes = session.scalars(select(Notification)
                            .where(Notification.account_id == account_id,
                                   Notification.cluster_id == cluster.id)
                            .order_by(Notification.id.desc()).limit(100))
    return {"cluster": cluster_view(cluster),
            "notifications": [notification_view(n) for n in notes]}


def backend_snapshot(session: Session, account_id: int) -> dict[str, Any]:
    account = session.get(Account, account_id)
    row = service.get_backend(session, account)
    return backend_view(row, service.backend_resources(session, account, row))


@router.get("/a/{slug}/clusters")
def clusters_page(request: Request, page: Page = Depends(page_member),
                  session: Session = Depends(db_session)) -> Response:
    return render(request, "clusters.html",
                  {"clusters": clusters_snapshot(session, page.access.account.id)}, page=page)


@router.get("/a/{slug}/clusters/{name}")
def cluster_page(name: str, request: Request, page: Page = Depends(page_member),
                 session: Session = Depends(db_session)) -> Response:
    snap = cluster_snapshot(session, page.access.account.id, name)
    return render(request, "cluster.html", snap, page=page)


@router.post("/a/{slug}/clusters/{name}/stop")
def stop_cluster(name: str, request: Request, form: dict = Depends(checked_form),
                 page: Page = Depends(page_member), session: Session = Depends(db_session)
                 ) -> Response:
    cluster = find_cluster(session, page.access.account.id, name)
    if cluster.state in ("pending", "starting", "running") and \
            cluster.desired_state != "stopped":
        cluster.desired_state = "stopped"  # the reconciler moves `state` to stopping
        notify(session, cluster.account_id, "cluster-stop",
               f"Stop requested by {page.visitor.user.username} (dashboard)", cluster=cluster)
    session.commit()
    reconciler = getattr(request.app.state, "reconciler", None)
    if reconciler is not None:
        reconciler.wake()
    return RedirectResponse(f"/a/{page.access.account.slug}/clusters/{name}", 303)


@router.get("/a/{slug}/clusters/{name}/logs.json")
def cluster_logs(name: str, request: Request, page: Page = Depends(page_member),
                 session: Session = Depends(db_session)) -> Response:
    cluster = find_cluster(session, page.access.account.id, name)
    streams = request.app.state.log_reader(session, cluster)
    return JSONResponse({"streams": streams}, headers={"Cache-Control": "no-store"})


# The streams check access with stream_account (no request-long DB session; see there).
@router.get("/a/{slug}/clusters/{name}/events")
def cluster_events(slug: str, name: str, request: Request) -> Response:
    account_id = stream_account(request, slug)
    with request.app.state.db.session() as session:
        find_cluster(session, account_id, name)  # 404 now rather than inside the stream
    return event_stream(request, lambda s: cluster_snapshot(s, account_id, name))


@router.get("/a/{slug}/clusters-events")
def clusters_events(slug: str, request: Request) -> Response:
    account_id = stream_account(request, slug)
    return event_stream(request, lambda s: {"clusters": clusters_snapshot(s, account_id)})


@router.get("/a/{slug}/backend/events")
def backend_events(slug: str, request: Request) -> Response:
    account_id = stream_account(request, slug)
    return event_stream(request, lambda s: backend_snapshot(s, account_id),
                        done=lambda data: data["state"] in FINAL_BACKEND)


def event_stream(request: Request, snapshot: Callable[[Session], dict[str, Any]],
                 done: Callable[[dict[str, Any]], bool] | None = None) -> StreamingResponse:
    """Send the snapshot whenever it changes (DB polling: requests never wait on AWS).

    Ends with an `end` event once `done(snapshot)`, so the page stops listening.
    """
    db = request.app.state.db

    def read() -> dict[str, Any]:
        with db.session() as session:
            return snapshot(session)

    async def events():
        yield "retry: 2000\n\n"
        last, deadline = None, time.monotonic() + STREAM_SECONDS
        while time.monotonic() < deadline and not await request.is_disconnected():
            data = await asyncio.to_thread(read)
            text = json.dumps(data, default=str)
            if text != last:
                last = text
                yield f"data: {text}\n\n"
            if done is not None and done(data):
                yield "event: end\ndata: {}\n\n"
                return
            await asyncio.sleep(POLL_SECONDS)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
