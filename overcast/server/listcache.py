"""A short-lived cache of cluster lists, answered in the event loop.

Why: dashboards and scripts poll `GET /api/v1/accounts/{slug}/clusters` together. Each list
is a DB read plus JSON encoding in a worker thread behind the admission gate, so 50 pollers
queued behind each other and behind creates (seconds at p99). Here a list already made for the
same token and query within `TTL` seconds is answered from memory: no slot, thread or
connection. Concurrent misses for one key wait for the one list being made (single flight),
and lists get a small lane of their own (`LANE` at once) instead of the admission gate, so a
burst of creates does not hold them up.

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
        self.making: dict[str, tuple[int, asyncio.Future]] = {}
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
        key = _key(scope)
        entry = self.entries.get(key)
        if entry and entry.generation == self.generation and \
                time.monotonic() - entry.made < TTL:
            await _replay(entry, send)
            return
        making = self.making.get(key)
        if making and making[0] == self.generation:  # one list for all who asked meanwhile
            entry = await asyncio.shield(making[1])
            if entry is not None:
                await _replay(entry, send)
                return
        await self._make(key, scope, receive, send)

    async def _make(self, key: str, scope: Scope, receive: Receive, send: Send) -> None:
        generation, future = self.generation, asyncio.get_running_loop().create_future()
        self.making[key] = (generation, future)
        captured: list[Message] = []

        async def capture(message: Message) -> None:
            captured.append(message)
            await send(message)

        entry = None
        try:
            async with self._lane_for():
                await self.app({**scope, SKIP_GATE: True}, receive, capture)
            entry = _entry(captured, generation)
            if entry is not None:
                self.entries[key] = entry
                self._trim()
        finally:
            future.set_result(entry)
            if self.making.get(key, (None, None))[1] is future:
                del self.making[key]

    def _lane_for(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a semaphore belongs to one loop (tests start several)
            self._lane, self._loop = asyncio.Semaphore(LANE), loop
        return self._lane

    def _trim(self) -> None:
        """Drop stale entries, so memory stays bounded by the keys used within TTL."""
        now = time.monotonic()
        for key in [k for k, e in self.entries.items()
                    if e.generation != self.generation or now - e.made >= TTL]:
            del self.entries[key]


def _key(scope: Scope) -> str:
    auth = b""
    for name, value in scope.get("headers", []):
        if name.lower() in (b"authorization", b"cookie"):
            auth += name + b"=" + value + b";"
    digest = hashlib.sha256(auth).hexdigest()  # no token kept in memory as such
    return f"{digest} {scope['path']}?{scope.get('query_string', b'').decode('latin-1')}"


def _entry(messages: list[Message], generation: int) -> Entry | None:
    start = next((m for m in messages if m["type"] == "http.response.start"), None)
    if start is None or start["status"] != 200:
        return None
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    return Entry(generation, time.monotonic(), 200, headers, body)


async def _replay(entry: Entry, send: Send) -> None:
    headers = [*entry.headers, (b"content-length", str(len(entry.body)).encode())]
    await send({"type": "http.response.start", "status": entry.status, "headers": headers})
    await send({"type": "http.response.body", "body": entry.body})
