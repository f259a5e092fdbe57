"""Engine and sessions; the schema is owned by the Alembic migrations beside this file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from overcast import settings

MIGRATIONS = Path(__file__).with_name("migrations")


# Connections used outside API requests: the reconciler's threads, the last-used flusher,
# event streams' polls. The pool is the API's admitted requests plus these, so an admitted
# request never waits on the pool (overcast.server.admission).
# reconciler: 2 loops + 4 step threads; flushers (last use, heartbeats); the scheduler
# long-poll's watcher; streams
BACKGROUND_CONNECTIONS = 10
BUSY_TIMEOUT_MS = 30_000


def pool_size() -> int:
    return settings.api_concurrency() + BACKGROUND_CONNECTIONS


def make_engine(url: str | None = None) -> Engine:
    url = url or settings.database_url()
    pool = {"pool_size": pool_size(), "max_overflow": BACKGROUND_CONNECTIONS,
            "pool_timeout": 30}
    if url.startswith("sqlite"):
        if make_url(url).database in (None, "", ":memory:"):
            pool = {}  # one shared in-memory database: SQLAlchemy picks its own pool
        engine = create_engine(url, connect_args={"check_same_thread": False,
                                                  "timeout": BUSY_TIMEOUT_MS / 1000}, **pool)
        _private_file(engine)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    url = postgres_driver(url)
    # A PostgreSQL that does not answer fails a connect in seconds, not at the TCP timeout.
    args = {"connect_timeout": 10} if url.startswith("postgresql+psycopg") else {}
    return create_engine(url, pool_pre_ping=True, connect_args=args, **pool)


def postgres_driver(url: str) -> str:
    """PostgreSQL through psycopg 3 (the driver we ship), whichever way the URL names it."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


def _private_file(engine: Engine) -> None:
    """Create the SQLite file readable by its owner only (it holds hashes and encrypted
    secrets); tighten an existing one. SQLite gives its -wal/-shm files the same mode."""
    path = engine.url.database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o600)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL: readers never block the writer nor each other; busy_timeout: a writer waits for
    # the lock instead of failing at once with "database is locked".
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (safe to call on every start)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Database:
    def __init__(self, url: str | None = None) -> None:
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        migrate(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
