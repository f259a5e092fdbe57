"""Checks of `overcast.Cluster`'s arguments (and their dask config defaults): a bad value is
a ValueError in the caller's thread, before anything is asked of the control plane."""

from __future__ import annotations

import math
import operator
from typing import Any


def workers_to_wait_for(wait_for_workers: Any, n_workers: int) -> int:
    """True: all; False/None/0: none; int >= 1: that many (at most n); 0 < x < 1: fraction."""
    if wait_for_workers is None or wait_for_workers is False:
        return 0
    if wait_for_workers is True:
        return n_workers
    if isinstance(wait_for_workers, float) and 0 < wait_for_workers < 1:
        return math.ceil(wait_for_workers * n_workers)
    if isinstance(wait_for_workers, (int, float)) and wait_for_workers >= 0:
        return min(int(wait_for_workers), n_workers)
    raise ValueError(f"wait_for_workers must be a bool, an int >= 0 or a fraction in (0, 1), "
                     f"not {wait_for_workers!r}")


def whole_number(value: Any, what: str) -> int:
    """A worker count: an int >= 0 (or a float with no fraction, as YAML may give); 1.5 or
    -1 is an error, never silently rounded or clamped."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a whole number >= 0, not {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        n = operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be a whole number >= 0, not {value!r}") from None
    if n < 0:
        raise ValueError(f"{what} must be >= 0, not {n}")
    return n


def truthy(value: Any) -> bool:
    """dask config from env variables arrives as text ("false", "0")."""
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off", "")
    return value is None or bool(value)
