"""The client's retried creates (one Idempotency-Key on every try) and its input checks."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from click.testing import CliRunner

from overcast.cli.main import cli
from overcast.client import api as api_module
from overcast.client.api import Api
from overcast.client.cluster import Cluster, whole_number
from overcast.client.errors import ApiError, ServerUnreachable

pytestmark = pytest.mark.timeout(60)
TOKEN = "test-token-0123456789"


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(api_module, "backoff", lambda attempt: 0.0)


def test_transport_errors_and_5xx_are_retried_with_one_key():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("idempotency-key"))
        if len(seen) == 1:
            raise httpx.ReadTimeout("slow", request=request)
        if len(seen) == 2:
            return httpx.Response(503, json={"detail": "busy"})
        return httpx.Response(201, json={"name": "c", "state": "pending"})

    transport = httpx.MockTransport(handler)
    api = Api("http://cp.test", TOKEN, async_transport=transport)
    info = asyncio.run(api.arequest("POST", "/accounts/a/clusters", json={},
                                    headers={"Idempotency-Key": "k-123456789"}, retries=3))
    assert info["name"] == "c"
    assert seen == ["k-123456789"] * 3


def test_retries_end_with_a_readable_error():
    def handler(request):
        raise httpx.ConnectError("refused", request=request)

    api = Api("http://cp.test", TOKEN, async_transport=httpx.MockTransport(handler))
    with pytest.raises(ServerUnreachable, match="Cannot reach"):
        asyncio.run(api.arequest("POST", "/x", retries=2))


def test_4xx_is_not_retried():
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(400, json={"detail": "n_workers=-1 is out of range"})

    api = Api("http://cp.test", TOKEN, async_transport=httpx.MockTransport(handler))
    with pytest.raises(ApiError, match="out of range"):
        asyncio.run(api.arequest("POST", "/x", retries=5))
    assert calls == [1]


def test_a_create_with_no_answer_is_found_by_key_and_deleted():
    """Every try of the create fails, yet the control plane made the cluster: the Cluster
    looks it up by its key and deletes it, so none is left that the user never heard of."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, request.url.path, dict(request.url.params)))
        if request.method == "POST":
            return httpx.Response(500, json={"detail": "boom"})
        if request.method == "GET":
            return httpx.Response(200, json=[{"name": "made", "state": "pending"}])
        return httpx.Response(202, json={"name": "made", "state": "stopping"})

    transport = httpx.MockTransport(handler)
    api = Api("http://cp.test", TOKEN, async_transport=transport, transport=transport)
    with pytest.raises(ApiError, match="failed"):
        Cluster(n_workers=1, account="a", api=api, progress=False)
    key = calls[0]
    assert [c[0] for c in calls] == ["POST"] * 6 + ["GET", "DELETE"]
    assert calls[6][2]["idempotency_key"]
    assert calls[7][1] == "/api/v1/accounts/a/clusters/made"
    assert key[0] == "POST"


@pytest.mark.parametrize("value", [1.5, -1, "2", True, None])
def test_worker_counts_are_whole_and_not_negative(value):
    with pytest.raises(ValueError, match="n"):
        whole_number(value, "n_workers")


def test_whole_numbers_pass():
    assert whole_number(3, "n") == 3 and whole_number(2.0, "n") == 2


def test_cli_refuses_a_bogus_level_with_usage_exit_code():
    result = CliRunner().invoke(cli, ["notifications", "--level", "bogus"])
    assert result.exit_code == 2 and "bogus" in result.output


@pytest.mark.parametrize("value", ["", "1e400", "soon"])
def test_bad_timeouts_are_refused_before_any_request(value):
    def handler(request):
        raise AssertionError("no request expected")

    api = Api("http://cp.test", TOKEN, async_transport=httpx.MockTransport(handler))
    with pytest.raises(ValueError, match="idle_timeout"):
        Cluster(n_workers=1, account="a", api=api, idle_timeout=value)
