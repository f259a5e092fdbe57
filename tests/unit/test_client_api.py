"""The User API client: request shapes, error mapping, and that the token never leaks."""

from __future__ import annotations

import asyncio

import dask.config
import httpx
import pytest

import overcast
from overcast.client.api import Api
from overcast.client.errors import (
    ApiError,
    NotConfigured,
    NotFound,
    OvercastError,
    ServerUnreachable,
)
from overcast.client.functions import delete_cluster, get_logs, get_notifications, list_clusters

TOKEN = "sekrit-token-abc123"


def make_api(handler, **kw) -> Api:
    transport = httpx.MockTransport(handler)
    return Api("http://cp.test", TOKEN, transport=transport, async_transport=transport, **kw)


def test_request_shape_and_auth_header():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[{"name": "a", "state": "running"}])

    api = make_api(handler)
    clusters = list_clusters("team-x", api=api)
    assert clusters == {"a": {"name": "a", "state": "running"}}
    (req,) = seen
    assert req.method == "GET"
    assert req.url.path == "/api/v1/accounts/team-x/clusters"
    assert req.headers["authorization"] == f"Bearer {TOKEN}"


def test_default_account_from_me_and_quoting():
    paths = []

    def handler(request):
        paths.append((request.method, request.url.raw_path.decode()))
        if request.url.path == "/api/v1/me":
            return httpx.Response(200, json={"username": "u", "default_account": "alice",
                                             "accounts": [{"slug": "alice", "role": "admin"}]})
        return httpx.Response(202, json={"name": "my cluster", "state": "stopping"})

    with dask.config.set({"overcast.account": None}):
        info = delete_cluster("my cluster", api=make_api(handler))
    assert info["state"] == "stopping"
    assert paths == [("GET", "/api/v1/me"),
                     ("DELETE", "/api/v1/accounts/alice/clusters/my%20cluster")]


@pytest.mark.parametrize("status,cls", [(400, ApiError), (409, ApiError), (404, NotFound),
                                        (403, ApiError), (422, ApiError), (500, ApiError)])
def test_4xx_maps_to_exception_with_server_message(status, cls):
    def handler(request):
        return httpx.Response(status, json={"detail": f"zone us-east-1z is not in region "
                                                      f"us-east-1 (token {TOKEN})"})

    with pytest.raises(cls) as info:
        make_api(handler).get("/accounts/a/clusters")
    assert "zone us-east-1z is not in region us-east-1" in str(info.value)
    assert TOKEN not in str(info.value)  # scrubbed even if the server echoes it
    assert info.value.status == status


def test_validation_errors_are_readable():
    def handler(request):
        return httpx.Response(422, json={"detail": [
            {"loc": ["body", "n_workers"], "msg": "Input should be a valid integer"}]})

    with pytest.raises(ApiError, match="n_workers: Input should be a valid integer"):
        make_api(handler).request("POST", "/accounts/a/clusters", json={"n_workers": "x"})


def test_401_means_not_configured_and_hides_token():
    def handler(request):
        return httpx.Response(401, json={"detail": f"bad token {TOKEN}"})

    with pytest.raises(NotConfigured) as info:
        make_api(handler).get("/me")
    assert "overcast up" in str(info.value)
    assert TOKEN not in str(info.value)


def test_unreachable_server():
    def handler(request):
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ServerUnreachable) as info:
        make_api(handler).get("/me")
    assert "overcast up" in str(info.value) and "http://cp.test" in str(info.value)
    assert TOKEN not in str(info.value)
    assert isinstance(info.value, NotConfigured)  # the CLI exits 3 for both


def test_async_request_maps_errors_too():
    def handler(request):
        return httpx.Response(409, json={"detail": "a cluster named x already runs"})

    async def main():
        api = make_api(handler)
        try:
            await api.arequest("POST", "/accounts/a/clusters", json={})
        finally:
            await api.aclose()

    with pytest.raises(ApiError, match="already runs"):
        asyncio.run(main())


def test_not_configured(monkeypatch):
    with dask.config.set({"overcast.server": None, "overcast.token": None}):
        with pytest.raises(NotConfigured, match="overcast up"):
            Api()
        with pytest.raises(NotConfigured):
            overcast.list_clusters()
    with (dask.config.set({"overcast.server": "http://x", "overcast.token": None}),
          pytest.raises(NotConfigured, match="API token")):
        Api()


def test_repr_hides_token():
    api = make_api(lambda r: httpx.Response(200))
    assert TOKEN not in repr(api) and "cp.test" in repr(api)


def test_notifications_params_and_json(capsys):
    seen = []
    rows = [{"id": 2, "time": "2026-01-01T00:00:01Z", "level": "error",
             "event_type": "instance.failed", "cluster": "c1", "message": "capacity"}]

    def handler(request):
        seen.append(dict(request.url.params))
        return httpx.Response(200, json=rows)

    api = make_api(handler)
    assert get_notifications("acc", cluster="c1", level=40, json=True, api=api) == rows
    assert seen[-1] == {"cluster": "c1", "level": "error", "limit": "100"}
    assert get_notifications("acc", api=api) is None  # prints a table
    printed = capsys.readouterr().out
    assert "instance.failed" in printed and "capacity" in printed


def test_get_logs_formats_streams():
    def handler(request):
        assert request.url.path == "/api/v1/accounts/acc/clusters/c1/logs"
        return httpx.Response(200, json={"streams": {"i-1": [
            {"timestamp": 0, "message": "hello\n"}, {"timestamp": 1000, "message": "world"}]}})

    logs = get_logs("c1", "acc", api=make_api(handler))
    assert logs == {"i-1": "1970-01-01 00:00:00 hello\n1970-01-01 00:00:01 world"}


def test_errors_are_overcast_errors():
    assert issubclass(NotFound, OvercastError) and issubclass(ServerUnreachable, OvercastError)
