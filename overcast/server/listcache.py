"""A short-lived cache of cluster lists, answered in the event loop.

Why: dashboards and scripts poll `GET /api/v1/accounts/{slug}/clusters` together. Each list
is a DB read plus JSON encoding in a worker thread behind the admission gate, so 50 pollers
queued behind each other and behind creates (seconds at p99). Here a list already made for the
same token and query within `TTL` seconds is answered from memory: no slot, thread or
connection. Misses for one key are made one at a time, and everyone who waited takes the list
made after they arrived (single flight); lists get a small lane of their own (`LANE` at once)
instead of the admission gate, so a burst of creates does not hold them up.

Freshness: any API write in this process (not an agent report) makes every cached list stale
at once, so a client sees its own create, stop or token revocation in its next list. What the
reconciler (or another replica) changes shows within `TTL`. Only 200 answers are cached, per
Authorization header (a token sees only what it was shown).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

TTL = 1.0
LANE = 2
LIST_PATH = re.compile(r"^/api/v1/accounts/[^/]+/clusters$")
NO_INVALIDATE = "/api/v1/agent/"  # agent reports reach lists only through the reconciler
SKIP_GATE = "overcast.skip_gate"  # scope key the admission gate honours


@dataclass
class Entry:
    generation: int
    made: float
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class ListCache:
    """ASGI middleware, outside the admission gate."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.generation = 0  # bumped by every write: older entries are never served
        self.entries: dict[str, Entry] = {}
        self.making: dict[str, asyncio.Lock] = {}
        self._lane: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            try:
                await self.app(scope, receive, send)
            finally:  # after the write committed: lists made before it are stale
                if not scope["path"].startswith(NO_INVALIDATE):
                    self.generation += 1
            return
        if scope["method"] != "GET" or not LIST_PATH.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        await self._list(scope, receive, send)

    async def _list(self, scope: Scope, receive: Receive, send: Send) -> None:
        key, arrived, arrived_at = _key(scope), self.generation, time.monotonic()
        entry = self.entries.get(key)
        if entry and self._fresh(entry, arrived):
            await _replay(entry, send)
            return
        # One list made at a time per key: whoever waited meanwhile takes the one made after
        # they arrived (its generation counts every write they could have seen).
        self._lane_for()  # locks and the lane belong to one loop (tests start several)
        lock = self.making.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self.entries.get(key)
            # A list begun after this request arrived is as fresh as it can get, however
            # long it took to make on a busy machine.
            if entry and (self._fresh(entry, arrived) or
                          (entry.generation >= arrived and entry.made >= arrived_at)):
                await _replay(entry, send)
                return
            await self._make(key, scope, receive, send)

    @staticmethod
    def _fresh(entry: Entry, arrived: int) -> bool:
        return entry.generation >= arrived and time.monotonic() - entry.made < TTL

    async def _make(self, key: str, scope: Scope, receive: Receive, send: Send) -> None:
        generation, made = self.generation, time.monotonic()
        captured: list[Message] = []

        async def capture(message: Message) -> None:
            captured.append(message)
            await send(message)

        async with self._lane_for():
            await self.app({**scope, SKIP_GATE: True}, receive, capture)
        entry = _entry(captured, generation, made)
        if entry is not None:
            self.entries[key] = entry
            self._trim()

    def _lane_for(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a semaphore belongs to one loop (tests start several)
            self._lane, self._loop, self.making = asyncio.Semaphore(LANE), loop, {}
        return self._lane

    def _trim(self) -> None:
        """Drop stale entries, so memory stays bounded by the keys used within TTL."""
        now = time.monotonic()
        for key in [k for k, e in self.entries.items()
                    if e.generation != self.generation or now - e.made >= TTL]:
            del self.entries[key]
            lock = self.making.get(key)
            if lock is not None and not lock.locked():
                del self.making[key]


def _key(scope: Scope) -> str:
    auth = b""
    for name, value in scope.get("headers", []):
        if name.lower() in (b"authorization", b"cookie"):
            auth += name + b"=" + value + b";"
    digest = hashlib.sha256(auth).hexdigest()  # no token kept in memory as such
    return f"{digest} {scope['path']}?{scope.get('query_string', b'').decode('latin-1')}"


def _entry(messages: list[Message], generation: int, made: float) -> Entry | None:
    start = next((m for m in messages if m["type"] == "http.response.start"), None)
    if start is None or start["status"] != 200:
        return None
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    return Entry(generation, made, 200, headers, body)


async def _replay(entry: Entry, send: Send) -> None:
    headers = [*entry.headers, (b"content-length", str(len(entry.body)).encode())]
    await send({"type": "http.response.start", "status": entry.status, "headers": headers})
    await send({"type": "http.response.body", "body": entry.body})
