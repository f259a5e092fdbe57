"""Where overcast keeps its state on this machine, and a few process-wide settings."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def home() -> Path:
    """The overcast state directory: `$OVERCAST_HOME`, else the user's data dir."""
    path = Path(os.environ.get("OVERCAST_HOME") or platformdirs.user_data_dir("overcast"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_dir() -> Path:
    path = home() / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def logs_dir() -> Path:
    path = home() / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_url() -> str:
    """`OVERCAST_DATABASE_URL` (e.g. PostgreSQL), else SQLite under the state directory."""
    return os.environ.get("OVERCAST_DATABASE_URL") or f"sqlite:///{home() / 'overcast.db'}"


def api_concurrency() -> int:
    """Requests the API works on at once (`OVERCAST_API_CONCURRENCY`, default 8); the DB
    pool and the worker-thread limit are sized from it (overcast.server.admission). Few:
    SQLite has one writer, and request threads share one GIL with the event loop."""
    try:
        return max(1, int(os.environ.get("OVERCAST_API_CONCURRENCY") or 8))
    except ValueError:
        return 8
