"""When API tokens and dashboard sessions were last used: noted in memory on each request and
written in one batch every FLUSH_SECONDS (and at shutdown).

Why: a write per authenticated request turned every read into a write; under load those
writes queued on SQLite's single writer and on the connection pool, and the API wedged.
A last-used time that is up to FLUSH_SECONDS old is plenty for "is this token still in use".
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from sqlalchemy import Table, bindparam, update
from sqlalchemy.orm import Session

from overcast.server.flusher import PeriodicFlusher
from overcast.store.db import Database
from overcast.store.models import ApiToken, WebSession, utcnow

log = logging.getLogger("overcast.server.usage")
FLUSH_SECONDS = 30.0


class LastUsed(PeriodicFlusher):
    """In-memory {row id: last use} for tokens and web sessions, flushed by a thread."""

    thread_name = "overcast-last-used"

    def __init__(self, db: Database, every: float = FLUSH_SECONDS) -> None:
        super().__init__(every)
        self._db = db
        self._lock = threading.Lock()
        self._tokens: dict[int, datetime] = {}
        self._sessions: dict[int, datetime] = {}

    def token(self, token_id: int) -> None:
        with self._lock:
            self._tokens[token_id] = utcnow()

    def web_session(self, session_id: int) -> None:
        with self._lock:
            self._sessions[session_id] = utcnow()

    def pending_token(self, token_id: int) -> datetime | None:
        """A use not written yet (so a token list can show it at once)."""
        with self._lock:
            return self._tokens.get(token_id)

    def flush(self) -> int:
        """Write what was noted since the last flush, in one transaction; the number of rows."""
        with self._lock:
            tokens, self._tokens = self._tokens, {}
            sessions, self._sessions = self._sessions, {}
        if not tokens and not sessions:
            return 0
        try:
            with self._db.session() as session:
                _write(session, ApiToken.__table__, "last_used_at", tokens)
                _write(session, WebSession.__table__, "last_seen_at", sessions)
        except Exception:
            log.warning("could not record token use; will retry", exc_info=True)
            with self._lock:  # newer uses noted meanwhile win
                self._tokens = {**tokens, **self._tokens}
                self._sessions = {**sessions, **self._sessions}
            return 0
        return len(tokens) + len(sessions)


def _write(session: Session, table: Table, column: str, seen: dict[int, datetime]) -> None:
    # Core executemany: a row deleted meanwhile (a signed-out session) is simply skipped.
    if seen:
        stmt = (update(table).where(table.c.id == bindparam("row_id"))
                .values({column: bindparam("seen_at")}))
        session.execute(stmt, [{"row_id": k, "seen_at": t} for k, t in seen.items()])
