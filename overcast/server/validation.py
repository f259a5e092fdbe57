"""Shared input checks of the API: ids that fit the database, notification levels.

Why: the id columns are `Integer`: 64-bit in SQLite but 32-bit in PostgreSQL, and both
drivers raise on an id that does not fit (a 500). Such an id names nothing, so it is refused
as input or treated as "not found" before any query. The bound is PostgreSQL's, 2^31-1.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

MAX_DB_ID = 2**31 - 1
LEVELS = ("debug", "info", "warning", "error", "critical")

DbId = Annotated[int, Path(ge=1, le=MAX_DB_ID, description="A row id (1 to 2^31-1).")]


def fits_db(n: int) -> bool:
    return 0 <= n <= MAX_DB_ID
