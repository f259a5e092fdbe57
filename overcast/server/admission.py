"""Request admission: at most `slots` requests do work at once; the rest wait their turn in
the event loop, holding nothing.

Why: each request uses one pooled DB connection and one worker thread. With more requests
in flight than connections, threads sat waiting on the pool (and SQLAlchemy's pool timeout
turned the wait into 500s). Sizing the pool as `slots` + the background users
(`overcast.store.db.BACKGROUND_CONNECTIONS`) and the thread limiter as `slots` + the event
streams' polls means an admitted request never waits on the pool. `/api/v1/health` is not
admitted at all: it answers from memory in the event loop, however busy the rest is.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from overcast.server.listcache import SKIP_GATE

UNGATED = ("/api/v1/health",)


class Gate:
    """The slots and what is waiting for them (shown by /api/v1/health, from memory)."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.waiting = 0
        self.active = 0
        self._sem: asyncio.Semaphore | None = None  # made lazily, in the server's own loop
        self._loop: asyncio.AbstractEventLoop | None = None

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a semaphore belongs to one loop (tests start several)
            self._sem, self._loop = asyncio.Semaphore(self.slots), loop
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        self.active += 1

    def release(self) -> None:
        self.active -= 1
        self._sem.release()


class Admission:
    """ASGI middleware letting requests through `gate` (all but UNGATED paths)."""

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Lists the list cache makes go through its own small lane (overcast.server.listcache).
        if scope["type"] != "http" or scope["path"] in UNGATED or scope.get(SKIP_GATE):
            await self.app(scope, receive, send)
            return
        await self.gate.acquire()
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self.gate.release()

        async def send_wrapper(message: Message) -> None:
            # An event stream holds no connection while it waits between polls: let the
            # slot go once its headers are out, or streams would use up every slot.
            if message["type"] == "http.response.start" and _is_stream(message):
                release()
            await send(message)

        # A long-poll gives its slot back while it only waits (server/scheduler_watch.py).
        scope["overcast.release_slot"] = release
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            release()


def _is_stream(message: Message) -> bool:
    for key, value in message.get("headers", []):
        if key.lower() == b"content-type" and value.startswith(b"text/event-stream"):
            return True
    return False
