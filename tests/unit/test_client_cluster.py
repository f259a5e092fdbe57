"""overcast.Cluster against a scripted control plane (httpx.MockTransport) and a real
TLS dask scheduler + worker in this process, so `Client(cluster)` really computes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import dask.config
import httpx
import pytest
from distributed import Client, LocalCluster

from overcast.client.api import Api
from overcast.client.cluster import Cluster
from overcast.client.errors import ApiError, ClusterStartError
from overcast.security import generate_cluster_tls

TOKEN = "tok-never-shown-42"


class FakeControlPlane:
    """Scripted User API: the cluster goes pending -> starting -> running on successive GETs."""

    def __init__(self, scheduler_address: str | None = None, tls=None,
                 states=("pending", "starting", "running"), existing: dict | None = None,
                 post_status: int = 201):
        self.requests: list[tuple[str, str, Any]] = []
        self.scheduler_address, self.tls = scheduler_address, tls
        self.states = list(states)
        self.info: dict[str, Any] | None = existing
        self.post_status = post_status

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        path = request.url.path.removeprefix("/api/v1")
        self.requests.append((request.method, path, body))
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        if path == "/me":
            return httpx.Response(200, json={"username": "u", "default_account": "alice",
                                             "accounts": [{"slug": "alice", "role": "admin"}]})
        if request.method == "POST" and path == "/accounts/alice/clusters":
            if self.post_status != 201:
                return httpx.Response(self.post_status, json={"detail": "no such zone"})
            self.info = self._cluster(body["name"] or "quiet-otter", body["n_workers"],
                                      self.states.pop(0))
            return httpx.Response(201, json=self.info)
        if self.info is None:
            return httpx.Response(404, json={"detail": "no such cluster"})
        base = f"/accounts/alice/clusters/{self.info['name']}"
        if request.method == "GET" and path == base:
            if self.info["state"] not in ("stopping", "stopped") and self.states:
                self._set_state(self.states.pop(0))
            elif self.info["state"] == "stopping":
                self._set_state("stopped")
            return httpx.Response(200, json=self.info)
        if path == base + "/credentials":
            return httpx.Response(200, json={"ca_cert": self.tls.ca_cert,
                                             "cert": self.tls.client_cert,
                                             "key": self.tls.client_key})
        if path == base + "/scale":
            self.info["n_workers"] = body["n_workers"]
            return httpx.Response(200, json=self.info)
        if path == base + "/logs":
            return httpx.Response(200, json={"streams": {"i-sched": [
                {"timestamp": 0, "message": "scheduler at tls://..."}]}})
        if request.method == "DELETE" and path == base:
            self._set_state("stopping")
            return httpx.Response(202, json=self.info)
        return httpx.Response(404, json={"detail": f"unexpected {request.method} {path}"})

    def _cluster(self, name: str, n_workers: int, state: str) -> dict[str, Any]:
        info = {"id": 1, "name": name, "account": "alice", "state": state, "reason": None,
                "n_workers": n_workers, "workers_ready": 0, "region": "us-east-1",
                "zone": "us-east-1a", "scheduler_address": None, "dashboard_link": None,
                "options": {}, "created_at": "2026-01-01T00:00:00Z",
                "instances": [{"aws_id": "i-sched", "role": "scheduler", "zone": "us-east-1a",
                               "subnet_id": "subnet-1", "spot": False, "state": "booting",
                               "address": None}]}
        self.info = info
        self._set_state(state)
        return info

    def _set_state(self, state: str) -> None:
        self.info["state"] = state
        if state == "running":
            self.info["scheduler_address"] = self.scheduler_address
            self.info["dashboard_link"] = "http://127.0.0.1:8787/status"
            self.info["workers_ready"] = self.info["n_workers"]
            self.info["instances"][0]["state"] = "ready"
        if state == "error":
            self.info["reason"] = "InsufficientInstanceCapacity in us-east-1a"

    def api(self) -> Api:
        transport = httpx.MockTransport(self.handler)
        return Api("http://cp.test", TOKEN, transport=transport, async_transport=transport)

    def calls(self, method: str) -> list[tuple[str, Any]]:
        return [(p, b) for m, p, b in self.requests if m == method]


@pytest.fixture(autouse=True)
def fast_polls():
    with dask.config.set({"overcast.poll-interval": "10ms", "overcast.progress": "none",
                          "overcast.close-timeout": "5s", "overcast.account": None}):
        yield


@pytest.fixture(scope="module")
def tls_scheduler():
    """A real dask scheduler + 1 worker that require the cluster's TLS certificates."""
    tls = generate_cluster_tls("quiet-otter")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tls",
                      host="127.0.0.1", security=tls.node_security(),
                      dashboard_address=":0") as local:
        yield tls, local.scheduler_address


def test_start_connect_compute_scale_close(tls_scheduler):
    tls, address = tls_scheduler
    plane = FakeControlPlane(address, tls)
    # Package sync is the default; said explicitly, as tests/e2e turns it off for its session.
    with dask.config.set({"overcast.package-sync": True}):
        cluster = Cluster(n_workers=1, backend_options={"zone": "us-east-1a"}, api=plane.api())
    try:
        assert cluster.name == "quiet-otter" and cluster.state == "running"
        (path, body), = plane.calls("POST")
        assert path == "/accounts/alice/clusters"
        sync = body.pop("package_sync")  # software=None: the client's packages
        assert any(p["name"] == "distributed" for p in sync["packages"])
        assert body == {"name": None, "n_workers": 1,
                        "backend_options": {"zone": "us-east-1a"}, "worker_gpu": None,
                        "scheduler_vm_types": None, "worker_vm_types": None,
                        "idle_timeout": None, "no_client_timeout": None}
        assert cluster.security is not None and cluster.scheduler_address == address
        with Client(cluster) as client:
            assert client.submit(lambda x: x + 1, 41).result() == 42
            assert client.dashboard_link == "http://127.0.0.1:8787/status"
        text = repr(cluster)
        assert "quiet-otter" in text and "alice" in text and "running" in text
        assert TOKEN not in text and "quiet-otter" in cluster._repr_html_()
        cluster.scale(3)
        assert plane.calls("POST")[-1] == ("/accounts/alice/clusters/quiet-otter/scale",
                                           {"n_workers": 3})
        assert len(cluster.plan) == 3 and cluster.plan == cluster.requested
        logs = cluster.get_logs()
        assert "scheduler at tls://" in logs["i-sched"]
    finally:
        cluster.close()
    assert plane.calls("DELETE") == [("/accounts/alice/clusters/quiet-otter", None)]
    assert plane.info["state"] == "stopped"


def test_error_state_raises_with_reason_and_deletes():
    plane = FakeControlPlane(states=("pending", "starting", "error"))
    with pytest.raises(ClusterStartError, match="InsufficientInstanceCapacity") as info:
        Cluster(n_workers=2, api=plane.api())
    assert "overcast notifications --cluster quiet-otter" in str(info.value)
    assert TOKEN not in str(info.value)
    assert plane.calls("DELETE") == [("/accounts/alice/clusters/quiet-otter", None)]


def test_start_timeout_deletes_the_cluster():
    plane = FakeControlPlane(states=("pending",) + ("starting",) * 10000)
    with pytest.raises(ClusterStartError, match="did not start within"):
        Cluster(n_workers=1, start_timeout="0.2s", api=plane.api())
    assert plane.calls("DELETE") == [("/accounts/alice/clusters/quiet-otter", None)]


def test_bad_request_is_reported_and_nothing_is_deleted():
    plane = FakeControlPlane(post_status=400)
    with pytest.raises(ApiError, match="no such zone"):
        Cluster(n_workers=1, api=plane.api())
    assert plane.calls("DELETE") == []


def test_reattach_by_name_does_not_create(tls_scheduler):
    tls, address = tls_scheduler
    plane = FakeControlPlane(address, tls, states=("running",))
    plane._cluster("shared", 1, "running")
    cluster = Cluster("shared", api=plane.api(), shutdown_on_close=False)
    try:
        assert cluster.name == "shared" and plane.calls("POST") == []
    finally:
        cluster.close()
    assert plane.calls("DELETE") == []  # shutdown_on_close=False leaves it running


def test_async_context_manager(tls_scheduler):
    tls, address = tls_scheduler
    plane = FakeControlPlane(address, tls)

    async def main() -> None:
        async with Cluster(n_workers=1, api=plane.api(), asynchronous=True) as cluster:
            assert cluster.state == "running"
            async with Client(cluster, asynchronous=True) as client:
                assert await client.submit(sum, [1, 2]) == 3
            await cluster.scale(2)
        assert plane.calls("DELETE")

    asyncio.run(main())


def test_adapt_uses_scale(tls_scheduler):
    tls, address = tls_scheduler
    plane = FakeControlPlane(address, tls)
    cluster = Cluster(n_workers=1, api=plane.api())
    try:
        adaptive = cluster.adapt(minimum=2, maximum=5, interval="20ms")

        async def until_scaled() -> None:
            while not any(p.endswith("/scale") for p, _ in plane.calls("POST")):
                await asyncio.sleep(0.02)

        cluster.sync(until_scaled, callback_timeout=10)
        assert plane.calls("POST")[-1][1]["n_workers"] >= 2
        adaptive.stop()
    finally:
        cluster.close()
