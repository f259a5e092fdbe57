"""Verified API tokens, kept in memory for a few seconds (the list fast path's authentication).

Why: under 50 polling clients every list paid a worker thread and two DB queries (the token,
then the membership) just to learn who is asking. Here a token verified against the DB within
`FRESH` seconds is trusted from memory; between `FRESH` and `MAX_AGE` it is still trusted but
checked again in the background, so a busy poller never waits on the DB; older than `MAX_AGE`
it is checked before it is trusted.

Revocation: any API write in this process other than a cluster write (a token revoked, a
member removed, a password changed) clears the cache at once (overcast.server.listcache), and a
check that began before the clear is not kept. A revocation made through another replica (or
directly in the DB) takes effect here within `MAX_AGE` seconds. Only valid tokens are kept
(an unknown token goes the slow way and gets the route's 401), keyed by SHA-256 like the DB.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from overcast.server.auth import hash_token

FRESH = 2.5  # seconds: trusted as is
MAX_AGE = 5.0  # seconds: the bound on how long a revocation elsewhere goes unnoticed here
MAX_ENTRIES = 10_000  # beyond this, entries past MAX_AGE are dropped on insert


@dataclass(frozen=True)
class Principal:
    """Who a token speaks for: the token row, its user, and their accounts by slug."""

    token_id: int
    user_id: int
    accounts: dict[str, int] = field(default_factory=dict)  # slug -> account id


@dataclass
class _Entry:
    principal: Principal
    verified: float  # monotonic time the DB check began


# verify(token) -> the principal if the token is live, else None; runs in a worker thread.
Verify = Callable[[str], "Principal | None"]


class TokenCache:
    def __init__(self, verify: Verify, run_in_thread) -> None:
        self._verify = verify
        self._run = run_in_thread  # async (fn, *args) -> result, in the list lane
        self._entries: dict[str, _Entry] = {}
        self._checking: dict[str, asyncio.Future] = {}
        self.generation = 0  # bumped by clear(): checks begun before it are not kept

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()

    async def principal(self, token: str) -> Principal | None:
        key = hash_token(token)
        entry = self._entries.get(key)
        age = time.monotonic() - entry.verified if entry else None
        if entry is not None and age < MAX_AGE:
            if age >= FRESH and self._running_check(key) is None:
                self._start_check(key, token)  # refresh ahead, in the background
            return entry.principal
        checking = self._running_check(key) or self._start_check(key, token)
        return await asyncio.shield(checking)

    def _running_check(self, key: str) -> asyncio.Future | None:
        future = self._checking.get(key)
        if future is not None and future.get_loop() is asyncio.get_running_loop():
            return future
        return None  # none, or one of a loop that is gone (tests run several loops)

    def _start_check(self, key: str, token: str) -> asyncio.Future:
        future = asyncio.ensure_future(self._check(key, token))
        self._checking[key] = future
        future.add_done_callback(lambda f: self._checking.pop(key, None)
                                 if self._checking.get(key) is f else None)
        return future

    async def _check(self, key: str, token: str) -> Principal | None:
        for _ in range(3):
            generation, began = self.generation, time.monotonic()
            principal = await self._run(self._verify, token)
            if generation == self.generation:
                break
            # Else a revocation (or another write) raced this check: check again.
        else:
            return None  # writes keep racing it: the caller goes the slow way (the route)
        if principal is None:
            self._entries.pop(key, None)
        else:
            self._put(key, _Entry(principal, began))
        return principal

    def _put(self, key: str, entry: _Entry) -> None:
        if len(self._entries) >= MAX_ENTRIES:
            now = time.monotonic()
            for k in [k for k, e in self._entries.items() if now - e.verified >= MAX_AGE]:
                del self._entries[k]
        self._entries[key] = entry
