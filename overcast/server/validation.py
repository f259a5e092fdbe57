"""Shared input checks of the API: ids that fit the database, notification levels.

Why: an id past 2^63-1 does not fit a 64-bit integer column; SQLite and PostgreSQL drivers
raise on it (a 500). Such an id names nothing, so it is refused as input or treated as
"not found" before any query.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

MAX_DB_ID = 2**63 - 1
LEVELS = ("debug", "info", "warning", "error", "critical")

DbId = Annotated[int, Path(ge=1, le=MAX_DB_ID, description="A row id (1 to 2^63-1).")]


def fits_db(n: int) -> bool:
    return 0 <= n <= MAX_DB_ID
