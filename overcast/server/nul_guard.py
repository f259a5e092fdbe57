"""Refuse NUL characters in request text (path, query, JSON or form body) with a 400.

Why: PostgreSQL cannot store or even compare text containing NUL (its driver raises, which
would be a 500); SQLite can. No name, option or message of ours ever needs one, so the
request is refused before any handler runs, the same on both databases.
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_NUL = re.compile(rb"%00|\x00|\\u0000", re.IGNORECASE)
MESSAGE = "Text in a request may not contain NUL characters (\\u0000 or %00): remove them."


class NulGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _NUL.search(scope.get("raw_path") or b"") or _NUL.search(scope["query_string"]):
            await _refuse(send)
            return
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        # Small bodies only (API JSON, dashboard forms): read it whole, check, replay it.
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        if _NUL.search(body):
            await _refuse(send)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


async def _refuse(send: Send) -> None:
    body = json.dumps({"detail": MESSAGE}).encode()
    await send({"type": "http.response.start", "status": 400,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
