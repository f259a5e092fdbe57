"""A small HTTP client for the control plane's User API (`/api/v1`), sync and async.

Every failure becomes an `overcast.client.errors` exception whose message is the server's
`detail` (what to change) or what to do next; the token never appears in a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

from overcast.client import config
from overcast.client.errors import ApiError, NotConfigured, NotFound, ServerUnreachable

API_PREFIX = "/api/v1"
RETRY_CAP = 8.0  # seconds, the longest wait between two tries

NOT_CONFIGURED = (
    "No overcast {what} is configured. Run `overcast up` to start overcast on this machine "
    "(it writes {path}), or set `overcast.server` and `overcast.token` in your dask config."
)


def seg(value: str) -> str:
    """Quote one path segment (cluster names come from users)."""
    return quote(str(value), safe="")


class Api:
    """User API client. `server`/`token` default to dask config `overcast.server`/`.token`.

    `transport`/`async_transport` exist for tests (httpx.MockTransport).
    """

    def __init__(
        self,
        server: str | None = None,
        token: str | None = None,
        *,
        timeout: float | None = None,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ):
        server = config.get("server", server)
        token = config.get("token", token)
        if not server:
            raise NotConfigured(NOT_CONFIGURED.format(what="server",
                                                      path=config.user_config_path()))
        if not token:
            raise NotConfigured(NOT_CONFIGURED.format(what="API token",
                                                      path=config.user_config_path()))
        self.server = str(server).rstrip("/")
        self._token = str(token)
        self.timeout = timeout if timeout is not None else config.seconds("request-timeout")
        self._transport = transport
        self._async_transport = async_transport
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None

    def __repr__(self) -> str:  # never show the token
        return f"Api({self.server!r})"

    # -- plumbing ---------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}

    def _url(self, path: str) -> str:
        return self.server + API_PREFIX + path

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def _unreachable(self, exc: Exception) -> ServerUnreachable:
        return ServerUnreachable(
            f"Cannot reach the overcast server at {self.server} ({type(exc).__name__}). "
            "Start it with `overcast up`, or check `overcast.server` in your dask config."
        )

    def _result(self, response: httpx.Response) -> Any:
        if response.is_success:
            if not response.content:
                return None
            return response.json()
        raise self._error(response)

    def _error(self, response: httpx.Response) -> Exception:
        status = response.status_code
        detail = _detail(response)
        if status == 401:
            return NotConfigured(
                "The overcast server refused your API token. Run `overcast up` again (on this "
                "machine) or set a valid `overcast.token` in your dask config."
            )
        message = self._scrub(detail or f"HTTP {status}")
        if status == 404:
            return NotFound(message, status)
        if status >= 500:
            return ApiError(
                f"The overcast server failed ({status}): {message}. Look at the server's log "
                "and try again.", status)
        return ApiError(message, status)

    # -- sync --------------------------------------------------------------------------------
    def request(self, method: str, path: str, *, json: Any = None,
                params: dict[str, Any] | None = None) -> Any:
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout, transport=self._transport)
        with self._transport_errors():
            response = self._client.request(method, self._url(path), json=json,
                                            params=_params(params), headers=self._headers())
        return self._result(response)

    @contextlib.contextmanager
    def _transport_errors(self) -> Iterator[None]:
        """httpx failures (sync or async) as the client's own short, actionable errors."""
        try:
            yield
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise self._unreachable(exc) from None
        except httpx.HTTPError as exc:
            raise ApiError(f"Request to the overcast server failed: {type(exc).__name__}. "
                           "Try again.") from None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def events(self, path: str, **params: Any) -> Iterator[tuple[str, str]]:
        """A server-sent-events stream as (event, data) pairs, until the server ends it.
        The read timeout is above the server's 15 s keep-alive, so a quiet stream lives."""
        timeout = httpx.Timeout(self.timeout, read=60.0)
        headers = {**self._headers(), "Accept": "text/event-stream"}
        try:
            with httpx.Client(timeout=timeout, transport=self._transport) as client, \
                    client.stream("GET", self._url(path), params=_params(params),
                                  headers=headers) as response:
                if not response.is_success:
                    response.read()
                    raise self._error(response)
                event, data = "message", []
                for line in response.iter_lines():
                    if not line:  # a blank line ends an event
                        if data:
                            yield event, "\n".join(data)
                        event, data = "message", []
                    elif line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].lstrip())
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise self._unreachable(exc) from None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- async -------------------------------------------------------------------------------
    async def arequest(self, method: str, path: str, *, json: Any = None,
                       params: dict[str, Any] | None = None,
                       headers: dict[str, str] | None = None, retries: int = 0) -> Any:
        """One API call. With `retries`, transport errors, timeouts and 5xx answers are tried
        again (exponential backoff with jitter): only for calls that are safe to repeat,
        such as a create carrying an Idempotency-Key."""
        if self._aclient is None:
            self._aclient = httpx.AsyncClient(timeout=self.timeout,
                                              transport=self._async_transport)
        for attempt in range(retries + 1):
            last = attempt == retries
            with self._transport_errors():
                try:
                    response = await self._aclient.request(
                        method, self._url(path), json=json, params=_params(params),
                        headers={**self._headers(), **(headers or {})})
                except httpx.TransportError:
                    if last:
                        raise
                    await asyncio.sleep(backoff(attempt))
                    continue
            if response.status_code >= 500 and not last:
                await asyncio.sleep(backoff(attempt))
                continue
            return self._result(response)
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None

    # -- User API ----------------------------------------------------------------------------
    def account(self, account: str | None = None) -> str:
        """`account`, else `overcast.account`, else the user's default account (GET /me)."""
        account = config.get("account", account)
        return account or self.get("/me")["default_account"]

    async def aaccount(self, account: str | None = None) -> str:
        account = config.get("account", account)
        return account or (await self.arequest("GET", "/me"))["default_account"]

    @staticmethod
    def clusters_path(account: str, name: str | None = None, suffix: str = "") -> str:
        path = f"/accounts/{seg(account)}/clusters"
        if name is not None:
            path += f"/{seg(name)}"
        return path + suffix


def backoff(attempt: int) -> float:
    """Seconds before retry `attempt` (0, 1, ...): 0.5, 1, 2, 4, 8 (capped), with jitter so
    many clients retrying after one outage do not all come back at once."""
    return min(RETRY_CAP, 0.5 * 2 ** attempt) * random.uniform(0.5, 1.0)


def _params(params: dict[str, Any] | None) -> dict[str, Any] | None:
    """Drop None values so optional filters are left out of the query string."""
    if not params:
        return None
    return {k: v for k, v in params.items() if v is not None}


def _detail(response: httpx.Response) -> str:
    """The server's message: FastAPI's `{"detail": str | [validation errors]}`, else text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500]
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI validation errors: say which field and why
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(x) for x in item.get("loc", []) if x != "body")
                parts.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail) if detail is not None else ""
