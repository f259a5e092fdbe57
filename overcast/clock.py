"""The control plane's clock: UTC now and a monotonic clock, both shiftable.

`OVERCAST_CLOCK_OFFSET` (seconds, default 0) shifts both, so an e2e test can restart the real
server "five minutes later" without waiting five minutes; unit tests call `advance()`. Nothing
else reads the wall clock for reconciler decisions.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

_offset = float(os.environ.get("OVERCAST_CLOCK_OFFSET", "0") or 0)


def now() -> datetime:
    """Naive UTC (the database stores naive UTC), shifted by the offset."""
    return datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=_offset)


def monotonic() -> float:
    return time.monotonic() + _offset


def advance(seconds: float) -> None:
    """Move the clock forward (tests)."""
    global _offset
    _offset += seconds


def offset() -> float:
    return _offset
