"""Exponential backoff with jitter, per key (a cluster, an account, a sweep place).

State lives in memory, keyed by id: it only spaces out retries, so losing it on a restart costs
one early retry per key, nothing more; keeping it in the database would add a write per
failure, the very load it is meant to shed.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from overcast import clock


@dataclass
class _State:
    failures: int = 0
    next_at: float = 0.0


class Backoff:
    """After the n-th consecutive failure a key waits base * 2**(n-1) (capped), of which a
    random half is jitter, so many keys failing together do not retry in lockstep."""

    def __init__(self, base: float = 1.0, cap: float = 120.0,
                 now: Callable[[], float] = clock.monotonic,
                 rand: Callable[[], float] = random.random) -> None:
        self.base, self.cap, self._now, self._rand = base, cap, now, rand
        self._states: dict[object, _State] = {}
        self._lock = threading.Lock()

    def ready(self, key: object) -> bool:
        with self._lock:
            state = self._states.get(key)
            return state is None or self._now() >= state.next_at

    def failed(self, key: object, at_least: float = 0.0) -> float:
        """Record a failure; returns the delay before `key` is tried again."""
        with self._lock:
            state = self._states.setdefault(key, _State())
            state.failures += 1
            ceiling = min(self.cap, self.base * 2 ** (state.failures - 1))
            delay = max(at_least, ceiling / 2 + self._rand() * ceiling / 2)
            state.next_at = self._now() + delay
            return delay

    def succeeded(self, key: object) -> None:
        with self._lock:
            self._states.pop(key, None)

    def failures(self, key: object) -> int:
        with self._lock:
            state = self._states.get(key)
            return state.failures if state else 0

    def forget(self, key: object) -> None:
        self.succeeded(key)
