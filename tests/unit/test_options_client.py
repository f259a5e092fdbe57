"""Client side of the option precedence: keyword > dask config (`overcast.backend-options`)."""

from __future__ import annotations

import dask
import pytest

from overcast.client.cluster import Cluster


class Captured(Exception):
    pass


class FakeApi:
    """Records the create request and stops the start right there."""

    def __init__(self) -> None:
        self.body: dict | None = None

    async def aaccount(self, account):
        return "alice"

    async def arequest(self, method, path, json=None, params=None, **kwargs):
        if method == "POST":
            self.body = json
            raise Captured()
        raise AssertionError(f"unexpected {method} {path}")

    async def aclose(self):
        pass


def create_body(**kwargs) -> dict:
    api = FakeApi()
    with pytest.raises(Captured):
        Cluster(n_workers=1, api=api, progress=False, **kwargs)
    return api.body


def test_config_backend_options_are_the_default_of_the_keyword():
    with dask.config.set({"overcast.backend-options": {"region": "us-west-1", "spot": True}}):
        assert create_body()["backend_options"] == {"region": "us-west-1", "spot": True}
        # The keyword replaces the config whole (the account/default fill in the rest).
        assert create_body(backend_options={"zone": "us-east-1b"})["backend_options"] == {
            "zone": "us-east-1b"}
        assert create_body(backend_options={})["backend_options"] == {}


def test_other_options_from_config_and_keyword():
    with dask.config.set({"overcast.idle-timeout": "1 hour", "overcast.worker-gpu": 1}):
        body = create_body(no_client_timeout="5 minutes")
        assert body["idle_timeout"] == "1 hour" and body["worker_gpu"] == 1
        assert body["no_client_timeout"] == "5 minutes"
        assert create_body(idle_timeout="2 minutes")["idle_timeout"] == "2 minutes"


def test_follow_notifications_reads_the_event_stream():
    import httpx

    from overcast.client.api import Api
    from overcast.client.functions import follow_notifications

    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = ("retry: 2000\n: connected\n\n"
                'id: 5\nevent: notification\ndata: {"id": 5, "event_type": "a"}\n\n'
                ": keep-alive\n\n"
                'id: 6\nevent: notification\ndata: {"id": 6, "event_type": "b"}\n\n')
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    api = Api("http://cp", "tok", transport=httpx.MockTransport(handler))
    rows = follow_notifications("alice", cluster="c", after_id=4, api=api)
    assert [next(rows)["id"], next(rows)["id"]] == [5, 6]
    assert seen[0].url.path == "/api/v1/accounts/alice/notifications/stream"
    assert seen[0].url.params["after_id"] == "4" and seen[0].url.params["cluster"] == "c"
    assert seen[0].headers["accept"] == "text/event-stream"
