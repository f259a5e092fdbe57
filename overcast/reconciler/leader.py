"""Which of the control-plane replicas sharing one database runs the reconciler.

Every replica serves the API; exactly one reconciles (launches, terminates, sweeps). The leader
is whoever holds a database lock:

- PostgreSQL: `pg_try_advisory_lock(LOCK_KEY)` on a connection of its own (outside the pool).
  The lock lives as long as that session: a leader killed with -9 loses its TCP connection and
  PostgreSQL releases the lock at once, so a follower, retrying every `RETRY_SECONDS`, takes
  over within a couple of seconds.
- SQLite: an exclusive `flock` on `<database file>.leader`. SQLite is one machine's file, so
  only processes on that machine can share it; the kernel drops the lock when the holder dies.
  A second server on the same file stays a follower (serves the API, never reconciles). An
  in-memory database is private to its process: that process leads.

Fencing: `still_leader()` is asked before every pass. On PostgreSQL it asks the server whether
this session still holds the lock, so a leader whose connection was cut (and whose lock may
now be someone else's) stops before it acts on a stale belief.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading

from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

log = logging.getLogger("overcast.reconciler")
# One fixed 64-bit key for "the overcast reconciler" (any constant works: b"ovrcast!").
LOCK_KEY = int.from_bytes(b"ovrcast!", "big")
RETRY_SECONDS = float(os.environ.get("OVERCAST_LEADER_RETRY_SECONDS", 1.0))
_HELD = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
             "AND pid = pg_backend_pid() AND classid = :hi AND objid = :lo")


class Leadership:
    """The lock of one replica. `try_acquire()` is cheap to repeat; `still_leader()` fences."""

    def __init__(self, engine: Engine) -> None:
        self.url = engine.url
        self.is_leader = False
        self._lock = threading.Lock()
        self._pg_engine: Engine | None = None
        self._pg_conn = None
        self._file = None

    @property
    def kind(self) -> str:
        return "sqlite" if self.url.get_backend_name() == "sqlite" else "postgresql"

    def try_acquire(self) -> bool:
        """Become the leader if nobody is; True if this replica leads now."""
        with self._lock:
            if self.is_leader:
                return True
            try:
                got = self._acquire_pg() if self.kind == "postgresql" else self._acquire_file()
            except (SQLAlchemyError, OSError) as exc:  # DB away: stay a follower, retry later
                log.warning("leader election: %s", type(exc).__name__)
                self._drop()
                got = False
            if got:
                log.info("this replica leads the reconciler (%s lock)", self.kind)
            self.is_leader = got
            return got

    def still_leader(self) -> bool:
        """Fencing before each pass: does this replica still hold the lock?"""
        with self._lock:
            if not self.is_leader:
                return False
            if self.kind == "postgresql":
                try:
                    held = self._pg_conn.execute(_HELD, _key_parts()).scalar() == 1
                except SQLAlchemyError:  # the session is gone, and the lock with it
                    held = False
                if not held:
                    log.warning("lost the reconciler lock: now a follower")
                    self._drop()
                    self.is_leader = False
            return self.is_leader

    def release(self) -> None:
        with self._lock:
            self._drop()
            self.is_leader = False

    def _acquire_pg(self) -> bool:
        if self._pg_conn is None:
            # Its own engine without a pool: the session that holds the lock is never handed
            # to a request, and never recycled by the pool (which would drop the lock).
            self._pg_engine = self._pg_engine or create_engine(
                self.url, poolclass=NullPool, connect_args={"connect_timeout": 5})
            self._pg_conn = self._pg_engine.connect().execution_options(
                isolation_level="AUTOCOMMIT")
        got = self._pg_conn.execute(text("SELECT pg_try_advisory_lock(:key)"),
                                    {"key": LOCK_KEY}).scalar()
        if not got:
            self._drop()  # a follower keeps no connection open between tries
        return bool(got)

    def _acquire_file(self) -> bool:
        path = _lock_path(self.url)
        if path is None:
            return True  # in-memory: no other process can see this database
        if self._file is None:
            self._file = open(path, "a")  # noqa: SIM115 (held open while leading)
            os.chmod(path, 0o600)
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._drop()
            return False
        return True

    def _drop(self) -> None:
        if self._pg_conn is not None:
            with contextlib.suppress(SQLAlchemyError):  # a dead session has no lock to drop
                self._pg_conn.close()  # closing the session releases the advisory lock
            self._pg_conn = None
        if self._file is not None:
            self._file.close()  # closing the file releases the flock
            self._file = None


def _key_parts() -> dict[str, int]:
    """pg_locks shows a bigint advisory key as two 32-bit halves (classid, objid)."""
    unsigned = LOCK_KEY & ((1 << 64) - 1)
    return {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF}


def _lock_path(url) -> str | None:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return os.path.abspath(database) + ".leader"
