"""Notifications of an account: list (newest first), filtered."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select
from sqlalchemy.orm import Session

from overcast.server.auth import AccountAccess, db_session, member_of
from overcast.server.views import notification_view
from overcast.store.models import Notification

router = APIRouter(prefix="/accounts/{slug}/notifications", tags=["notifications"])


@router.get("")
def list_notifications(access: AccountAccess = Depends(member_of),
                       session: Session = Depends(db_session),
                       cluster: str | None = None, level: str | None = None,
                       event_type: str | None = None, after_id: int | None = None,
                       limit: int = Query(100, ge=1, le=1000)) -> list[dict]:
    query = select(Notification).where(Notification.account_id == access.account.id)
    if cluster:
        query = query.where(Notification.cluster_name == cluster)
    if level:
        query = query.where(Notification.level == level)
    if event_type:
        query = query.where(Notification.event_type == event_type)
    if after_id:
        query = query.where(Notification.id > after_id)
    rows = session.scalars(query.order_by(Notification.id.desc()).limit(limit)).all()
    return [notification_view(r) for r in rows]
