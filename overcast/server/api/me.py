"""Who am I, and which accounts may I use."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from overcast.server.auth import current_user, db_session
from overcast.store.models import Account, User

router = APIRouter(tags=["me"])


@router.get("/health")
async def health(request: Request) -> dict:
    """Answered in the event loop from memory: no thread, no DB connection, so it answers
    however busy the API is (`waiting`: requests queued for an admission slot; `leader`: this
    replica runs the reconciler, overcast/reconciler/leader.py)."""
    gate = request.app.state.gate
    reconciler = request.app.state.reconciler
    # `leader`: this replica runs the reconciler (one of the replicas on a database does).
    leader = bool(reconciler and reconciler.leadership.is_leader)
    return {"status": "ok", "active": gate.active, "waiting": gate.waiting,
            "slots": gate.slots, "leader": leader}


@router.get("/me")
def me(user: User = Depends(current_user), session: Session = Depends(db_session)) -> dict:
    default = session.get(Account, user.default_account_id) if user.default_account_id else None
    return {"username": user.username, "default_account": default.slug if default else None,
            "accounts": [{"slug": m.account.slug, "role": m.role} for m in user.memberships]}
