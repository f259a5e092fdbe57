"""Notifications of an account: list (newest first), filtered; and a live server-sent-events
stream of new ones (`text/event-stream`, one `notification` event per row, id = row id)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from overcast.server.auth import (
    AccountAccess,
    account_access,
    bearer,
    db_session,
    member_of,
    user_for_token,
)
from overcast.server.validation import LEVELS, MAX_DB_ID, fits_db
from overcast.server.views import notification_view
from overcast.store.models import Notification

router = APIRouter(prefix="/accounts/{slug}/notifications", tags=["notifications"])
STREAM_POLL = 0.5  # seconds between look-ups for new rows (a cheap indexed query)
KEEPALIVE = 15.0  # a comment line this often, so proxies keep an idle stream open
# A stream ends after this long; EventSource and the client reconnect (with Last-Event-ID /
# after_id), so nothing is missed, and no stream outlives a proxy's or a test's patience.
STREAM_SECONDS = 600.0


AfterId = Query(None, ge=0, le=MAX_DB_ID, description="Only notifications after this id.")


def check_level(level: str | None) -> str | None:
    if level is not None and level.lower() not in LEVELS:
        raise HTTPException(400, f"level={level!r} is not a level: use one of "
                                 f"{', '.join(LEVELS)}.")
    return level.lower() if level else level


def event_id(last_event_id: str | None) -> int | None:
    """The Last-Event-ID a reconnecting EventSource sends: one of our ids, or refused."""
    if last_event_id is None or not last_event_id.strip():
        return None
    text = last_event_id.strip()
    if not (text.isascii() and text.isdigit()) or not fits_db(int(text)):
        raise HTTPException(400, "Last-Event-ID must be a notification id (0 to 2^31-1), as "
                                 "sent in the stream's `id:` lines.")
    return int(text)


def _query(account_id: int, cluster: str | None, level: str | None,
           event_type: str | None) -> Select:
    level = check_level(level)
    query = select(Notification).where(Notification.account_id == account_id)
    if cluster:
        query = query.where(Notification.cluster_name == cluster)
    if level:
        query = query.where(Notification.level == level)
    if event_type:
        query = query.where(Notification.event_type == event_type)
    return query


@router.get("")
def list_notifications(access: AccountAccess = Depends(member_of),
                       session: Session = Depends(db_session),
                       cluster: str | None = None, level: str | None = None,
                       event_type: str | None = None, after_id: int | None = AfterId,
                       limit: int = Query(100, ge=1, le=1000)) -> list[dict]:
    query = _query(access.account.id, cluster, level, event_type)
    if after_id:
        query = query.where(Notification.id > after_id)
    rows = session.scalars(query.order_by(Notification.id.desc()).limit(limit)).all()
    return [notification_view(r) for r in rows]


@router.get("/stream", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def stream_notifications(slug: str, request: Request,
                               cluster: str | None = None, level: str | None = None,
                               event_type: str | None = None, after_id: int | None = AfterId,
                               last_event_id: str | None = Header(None)) -> StreamingResponse:
    """New notifications as they happen, oldest first. Starts after `after_id` (or the
    `Last-Event-ID` a reconnecting EventSource sends), else after the newest existing one."""
    db = request.app.state.db
    # Authorised in a session of its own, closed now: a session held by a dependency would
    # keep a pooled connection for the whole stream.
    account_id = await run_in_threadpool(_authorize, db, request, slug)
    query = _query(account_id, cluster, level, event_type)
    if after_id is None:
        after_id = event_id(last_event_id)

    def newest() -> int:
        with db.session() as session:
            return session.scalar(select(func.max(Notification.id)).where(
                Notification.account_id == account_id)) or 0

    def fetch(last: int) -> list[dict]:
        with db.session() as session:
            rows = session.scalars(query.where(Notification.id > last)
                                   .order_by(Notification.id).limit(500)).all()
            return [notification_view(r) for r in rows]

    start = after_id if after_id is not None else await run_in_threadpool(newest)

    async def events() -> AsyncIterator[str]:
        last, quiet = start, 0.0
        deadline = time.monotonic() + STREAM_SECONDS
        yield "retry: 2000\n: connected\n\n"
        while time.monotonic() < deadline and not await request.is_disconnected():
            rows = await run_in_threadpool(fetch, last)
            for row in rows:
                last = row["id"]
                yield f"id: {row['id']}\nevent: notification\ndata: {json.dumps(row)}\n\n"
            quiet = 0.0 if rows else quiet + STREAM_POLL
            if quiet >= KEEPALIVE:
                quiet = 0.0
                yield ": keep-alive\n\n"
            await asyncio.sleep(STREAM_POLL)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _authorize(db, request: Request, slug: str) -> int:
    with db.session() as session:
        user = user_for_token(session, bearer(request), request.app.state.last_used)
        if user is None:
            raise HTTPException(401, "Invalid or revoked API token: run `overcast login` "
                                     "or `overcast up` to get a new one.")
        return account_access(slug, user, session).account.id
