from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from overcast.agent.control import ControlPlane, ControlPlaneError
from overcast.bootconfig import BootConfig

SECRET = "s3cret-cluster-token"


def _boot() -> BootConfig:
    return BootConfig(
        control_plane="http://control.test:8600/",
        cluster_id=12,
        cluster_token=SECRET,
        role="worker",
        log_group="acme",
        region="us-east-1",
    )


def _run(handler, coro_fn):
    async def main():
        control = ControlPlane(_boot(), "i-1", transport=httpx.MockTransport(handler))
        try:
            return await coro_fn(control)
        finally:
            await control.aclose()

    return asyncio.run(main())


def test_routes_bodies_and_bearer_token() -> None:
    seen: list[tuple[str, str, dict | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == f"Bearer {SECRET}"
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.path, body))
        path = request.url.path
        if path.endswith("/tls"):
            return httpx.Response(200, json={"ca_cert": "CA", "cert": "C", "key": "K"})
        if path.endswith("/scheduler"):
            return httpx.Response(200, json={"address": "tls://127.10.0.2:8786"})
        if path.endswith("/heartbeat"):
            return httpx.Response(200, json={"action": "stop"})
        return httpx.Response(200, json={})

    async def calls(c: ControlPlane):
        tls = await c.tls()
        addr = await c.scheduler_address()
        await c.ready("tls://127.10.0.3:40000", None)
        action = await c.heartbeat({})
        await c.failed("boom")
        return tls, addr, action

    tls, addr, action = _run(handler, calls)
    assert (tls.ca_cert, tls.cert, tls.key) == ("CA", "C", "K")
    assert SECRET not in repr(tls) and "K" not in repr(tls).replace("NodeTLS", "")
    assert addr == "tls://127.10.0.2:8786"
    assert action == "stop"
    base = "/api/v1/agent/clusters/12"
    assert seen == [
        ("GET", f"{base}/tls", None),
        ("GET", f"{base}/scheduler", None),
        (
            "POST",
            f"{base}/instances/i-1/ready",
            {"address": "tls://127.10.0.3:40000", "dashboard_address": None},
        ),
        ("POST", f"{base}/instances/i-1/heartbeat", {}),
        ("POST", f"{base}/instances/i-1/failed", {"reason": "boom"}),
    ]


def test_scheduler_not_ready_is_none() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"address": None})

    assert _run(handler, lambda c: c.scheduler_address()) is None


def test_internal_address_is_preferred_and_sent_only_when_different() -> None:
    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            bodies.append(json.loads(request.content))
            return httpx.Response(200, json={})
        return httpx.Response(
            200, json={"address": "tls://3.3.3.3:8786", "internal_address": "tls://10.0.0.5:8786"}
        )

    async def calls(c: ControlPlane):
        await c.ready("tls://3.3.3.3:8786", "http://3.3.3.3:8787/status", "tls://10.0.0.5:8786")
        await c.ready("tls://127.10.0.2:8786", None, "tls://127.10.0.2:8786")
        return await c.scheduler_address()

    assert _run(handler, calls) == "tls://10.0.0.5:8786"
    assert bodies[0]["internal_address"] == "tls://10.0.0.5:8786"
    assert "internal_address" not in bodies[1]


def test_retries_connection_errors_and_5xx(caplog: pytest.LogCaptureFixture) -> None:
    attempts = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise httpx.ConnectError("connection refused", request=request)
        if attempts["n"] == 2:
            return httpx.Response(503, text="restarting")
        return httpx.Response(200, json={"ca_cert": "CA", "cert": "C", "key": "K"})

    with caplog.at_level(logging.DEBUG):
        tls = _run(handler, lambda c: c.tls())
    assert tls.cert == "C" and attempts["n"] == 3
    assert SECRET not in caplog.text  # never logs the token


def test_4xx_raises_at_once_with_detail() -> None:
    attempts = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        attempts["n"] += 1
        return httpx.Response(403, json={"detail": "bad cluster token"})

    with pytest.raises(ControlPlaneError, match="bad cluster token") as info:
        _run(handler, lambda c: c.tls())
    assert info.value.status == 403 and attempts["n"] == 1


def test_gives_up_after_retry_for() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ConnectionError):
        _run(handler, lambda c: c._call("GET", "/tls", retry_for=0.5))
    # Heartbeats do not retry: the next beat is the retry.
    with pytest.raises(ConnectionError):
        _run(handler, lambda c: c.heartbeat({"workers": 0}))
