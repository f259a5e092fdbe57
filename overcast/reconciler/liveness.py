"""Liveness across control-plane outages: silence the control plane could not hear is never
held against an instance.

The control plane marks itself alive every few seconds (one row, `control_plane_marks`). When a
mark finds the previous one older than `GAP` seconds (the server was stopped, crashed, or was
too saturated to write), that gap ended now. An instance's heartbeat age then counts only from
max(its last heartbeat, the end of the last gap): time the control plane was up and answering.
docs/liveness.md has the whole rule, including the confirmations asked before a terminate.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime, timedelta

from overcast import clock
from overcast.store.db import Database
from overcast.store.models import ControlPlaneMark, utcnow

log = logging.getLogger("overcast.reconciler")
MARK_EVERY = float(os.environ.get("OVERCAST_ALIVE_MARK_SECONDS", 2.0))
GAP = float(os.environ.get("OVERCAST_ALIVE_GAP_SECONDS", 10.0))


class Liveness:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._gap_ended_at: datetime | None = None
        self._marked = 0.0  # clock.monotonic() of the last mark
        self._lock = threading.Lock()

    def maybe_mark(self) -> None:
        """Mark unless one was made within MARK_EVERY: each cluster pass calls this first, so
        a pass after a freeze never judges heartbeats before the gap is known."""
        if clock.monotonic() - self._marked >= MARK_EVERY:
            self.mark()

    def mark(self) -> datetime:
        """Record that the control plane is up now; returns the end of the last gap."""
        now = utcnow()
        with self.db.session() as session:
            row = session.get(ControlPlaneMark, 1)
            if row is None:  # first start: nothing before now was watched
                row = ControlPlaneMark(id=1, alive_at=now, gap_ended_at=now)
                session.add(row)
            elif now - row.alive_at > timedelta(seconds=GAP):
                log.warning("control plane was not marking for %.0f s: heartbeat silence in "
                            "that time is not held against instances",
                            (now - row.alive_at).total_seconds())
                row.gap_ended_at = now
            row.alive_at = now
            gap_end = row.gap_ended_at or now
            session.commit()
        with self._lock:
            self._gap_ended_at = gap_end
            self._marked = clock.monotonic()
        return gap_end

    @property
    def gap_ended_at(self) -> datetime | None:
        with self._lock:
            return self._gap_ended_at

    def since(self, moment: datetime | None, now: datetime | None = None) -> timedelta:
        """How long the control plane was up and answering since `moment`."""
        now = now or utcnow()
        start = moment or now
        gap_end = self.gap_ended_at
        if gap_end is not None and gap_end > start:
            start = gap_end
        return max(now - start, timedelta(0))

    def run(self, stop: threading.Event) -> None:
        """The marking thread: its own, so a slow reconciler pass is not taken for a gap."""
        while not stop.is_set():
            try:
                self.mark()
            except Exception:  # the DB being unavailable is itself a gap; keep trying
                log.exception("could not mark the control plane alive")
            stop.wait(MARK_EVERY)
