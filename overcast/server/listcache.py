"""The cluster list's fast path: `GET /api/v1/accounts/{slug}/clusters` answered in the event
loop from memory, with no admission slot, worker thread or DB connection.

Why: dashboards and scripts poll the list together. Each list was a worker thread behind the
admission gate (queued behind creates), two queries to authenticate, one to list, and JSON
encoding: with 50 pollers and 100 creates, p99 ~1 s on SQLite and ~4 s on PostgreSQL.

Here the token is checked against overcast.server.tokencache (verified in the DB within a few
seconds) and the account's list comes from overcast.server.clusterlists (patched by this
process's cluster writes, rebuilt by age). A user only gets the accounts the DB said they
belong to: the list is the account's, the same for every member. Only the plain list (`state=
active`, `limit`) is served here; anything else (`after`, `idempotency_key`, `state=all`, a
token or account the caches do not vouch for, so the 401/404/422 texts stay the route's) goes
to the route, through the gate. Misses and rebuilds read the DB in a lane of `LANE` threads of
their own, not behind the gate.

Writes: a cluster route marks its request (`cluster_changed`, `unchanged`) after patching the
lists; any other API write in this process (agent reports aside: they reach lists through the
reconciler) makes every snapshot unservable and empties the token cache, so a revoked token or
a removed member is refused by the next request.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any
from urllib.parse import parse_qsl

import anyio
from anyio import to_thread
from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from overcast.server.clusterlists import ClusterLists
from overcast.server.tokencache import TokenCache
from overcast.server.usage import LastUsed

log = logging.getLogger("overcast.server.listcache")

LANE = 2  # worker threads (and DB connections) for token checks and list rebuilds
MAX_PAGE = 1000  # = overcast.server.api.clusters.MAX_PAGE (the route's page bound)
LIST_PATH = re.compile(r"^/api/v1/accounts/(?P<slug>[^/]+)/clusters$")
NO_INVALIDATE = "/api/v1/agent/"
PATCHED = "overcast.lists_patched"  # scope key: this write has updated the lists itself


class Lane:
    """`LANE` worker threads for the fast path's DB reads (one limiter per event loop)."""

    def __init__(self, size: int = LANE) -> None:
        self.size = size
        self._limiters: dict[int, anyio.CapacityLimiter] = {}

    async def run(self, fn, *args):
        loop = id(asyncio.get_running_loop())
        limiter = self._limiters.get(loop)
        if limiter is None:  # a limiter belongs to one loop (tests start several)
            self._limiters = {loop: anyio.CapacityLimiter(self.size)}
            limiter = self._limiters[loop]
        return await to_thread.run_sync(fn, *args, limiter=limiter)


def cluster_changed(request: Request, account_id: int, cluster_id: int,
                    item: bytes | None) -> None:
    """After a committed cluster write in a route: lists show `item` (None: gone from the
    active list) from now on, with no rebuild."""
    lists: ClusterLists | None = getattr(request.app.state, "lists", None)
    if lists is not None:
        lists.changed(account_id, cluster_id, item)
    unchanged(request)


def unchanged(request: Request) -> None:
    """This write request changed nothing a list shows (e.g. a replayed create)."""
    request.scope[PATCHED] = True


class ListCache:
    """ASGI middleware, outermost (outside the admission gate)."""

    def __init__(self, app: ASGIApp, lists: ClusterLists, tokens: TokenCache,
                 last_used: LastUsed | None = None) -> None:
        self.app = app
        self.lists = lists
        self.tokens = tokens
        self.last_used = last_used

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            async def send_after_write(message: Message) -> None:
                if message["type"] == "http.response.start":  # before the client can act
                    self._after_write(scope)
                await send(message)

            try:
                await self.app(scope, receive, send_after_write)
            finally:  # and once more when all is done (a commit after the answer, an error)
                self._after_write(scope)
            return
        match = LIST_PATH.match(scope["path"]) if scope["method"] == "GET" else None
        limit = _plain_list(scope) if match else None
        if limit is None or not await self._answer(scope, send, match["slug"], limit):
            await self.app(scope, receive, send)

    def _after_write(self, scope: Scope) -> None:
        if scope.get(PATCHED) or scope["path"].startswith(NO_INVALIDATE):
            return
        self.lists.invalidate()
        self.tokens.clear()  # a revoked token, a removed member: refused from now on

    async def _answer(self, scope: Scope, send: Send, slug: str, limit: int) -> bool:
        token = _bearer(scope)
        if token is None:
            return False
        try:
            principal = await self.tokens.principal(token)
            account_id = principal.accounts.get(slug) if principal else None
            snap = await self.lists.snapshot(account_id) if account_id is not None else None
        except Exception:
            log.exception("List fast path failed; the route answers")
            return False
        if snap is None:
            return False
        if self.last_used is not None:
            self.last_used.token(principal.token_id)
        body, next_after = snap.page(limit)
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]
        if next_after is not None:
            headers.append((b"x-next-after", str(next_after).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return True


def _bearer(scope: Scope) -> str | None:
    """The token as overcast.server.auth.bearer reads it, else None."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


def _plain_list(scope: Scope) -> int | None:
    """The `limit` of a plain active list (default a full page), else None (the route)."""
    try:
        pairs = parse_qsl(scope.get("query_string", b"").decode("ascii"),
                          keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        return None
    params: dict[str, Any] = dict(pairs)
    if len(params) != len(pairs) or not set(params) <= {"state", "limit"}:
        return None
    if params.get("state", "active") != "active":
        return None
    limit = params.get("limit", str(MAX_PAGE))
    if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= MAX_PAGE:
        return None
    return int(limit)
