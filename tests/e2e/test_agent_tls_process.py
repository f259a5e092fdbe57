"""The whole agent: real agent processes, a fake IMDS + control plane, moto for CloudWatch.

The fakes (IMDS, control plane) live only in agentfakes.py; moto's ThreadedMotoServer stands
in for CloudWatch Logs. Mutual TLS between plain dask servers: test_agent_tls_mutual.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from distributed import Client, Worker
from moto.server import ThreadedMotoServer

from overcast.dashboardcred import dashboard_token
from overcast.security import ClusterTLS, generate_cluster_tls
from tests.e2e.agentfakes import (
    CLUSTER_TOKEN,
    LOG_GROUP,
    Agents,
    FakeCloud,
    logs_client,
    stream,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tls() -> ClusterTLS:
    return generate_cluster_tls("tls-test")


def _inc(x: int) -> int:
    return x + 1


def _worker_facts(dask_worker: Worker) -> dict:
    return {
        "name": dask_worker.name,
        "resources": dask_worker.state.total_resources,
        "nthreads": dask_worker.state.nthreads,
    }


@pytest.fixture(scope="module")
def moto_logs() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    logs_client(url).create_log_group(logGroupName=LOG_GROUP)
    yield url
    server.stop()


@pytest.fixture
def cloud(tls: ClusterTLS) -> Iterator[FakeCloud]:
    server = FakeCloud(tls)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def agents(cloud: FakeCloud, moto_logs: str, tmp_path: Path) -> Iterator[Agents]:
    a = Agents(cloud, moto_logs, tmp_path)
    yield a
    a.stop_all()


@pytest.mark.timeout(120)
def test_agent_scheduler_and_worker_end_to_end(agents: Agents, tls: ClusterTLS) -> None:
    cloud = agents.cloud
    start = time.monotonic()
    agents.boot("i-sched1", "scheduler", 2)
    agents.boot("i-work1", "worker", 3, worker_resources={"GPU": 1})
    agents.wait(lambda: "i-sched1" in cloud.ready, what="scheduler ready")
    scheduler_ready = time.monotonic() - start
    agents.wait(lambda: "i-work1" in cloud.ready, what="worker ready")
    print(
        f"scheduler ready after {scheduler_ready:.2f}s, "
        f"worker after {time.monotonic() - start:.2f}s"
    )

    sched = cloud.ready["i-sched1"]
    ip = cloud.instances["i-sched1"]["ip"]
    assert sched["address"].startswith(f"tls://{ip}:")
    assert sched["dashboard_address"].startswith(f"https://{ip}:")
    assert sched["dashboard_address"].endswith("/status")
    assert cloud.ready["i-work1"]["address"].startswith(
        f"tls://{cloud.instances['i-work1']['ip']}:"
    )

    # The bokeh dashboard is attached just after "ready": HTTPS under a certificate the
    # control plane issued for the scheduler's address, and only with the dashboard token.
    cluster_ca = ssl.create_default_context(cadata=tls.ca_cert)
    token = dashboard_token(CLUSTER_TOKEN)

    def dashboard_up() -> bool:
        try:
            return httpx.get(sched["dashboard_address"], verify=cluster_ca, timeout=2,
                             headers={"Authorization": f"Bearer {token}"}).status_code == 200
        except httpx.HTTPError:
            return False

    agents.wait(dashboard_up, 20, "the dashboard")
    assert httpx.get(sched["dashboard_address"], verify=cluster_ca, timeout=5).status_code == 403

    async def use_cluster() -> tuple[int, dict]:
        async with Client(
            sched["address"], security=tls.client_security(), asynchronous=True, timeout="10s"
        ) as c:
            workers = list((await c.run(_worker_facts)).values())
            result = await c.submit(_inc, 1, resources={"GPU": 1})
            n = len(cloud.heartbeats.get("i-sched1", []))
            agents.wait(lambda: len(cloud.heartbeats["i-sched1"]) > n + 1, 10, "heartbeat")
            return result, {"workers": workers, "beat": cloud.heartbeats["i-sched1"][-1]}

    result, seen = asyncio.run(use_cluster())
    assert result == 2
    assert seen["workers"] == [{"name": "i-work1", "resources": {"GPU": 1}, "nthreads": 1}]
    assert seen["beat"]["workers"] == 1 and seen["beat"]["clients"] == 1
    assert set(seen["beat"]) == {"workers", "tasks", "clients", "idle_seconds"}
    assert cloud.heartbeats["i-work1"][-1] == {}

    # The dask processes' own log lines and the agent's land in each instance's stream.
    agents.wait(
        lambda: any(
            "distributed.scheduler - INFO" in m for m in stream(agents.moto_url, "i-sched1")
        ),
        15,
        "scheduler logs",
    )
    agents.wait(
        lambda: any("distributed.worker - INFO" in m for m in stream(agents.moto_url, "i-work1")),
        15,
        "worker logs",
    )
    sched_log = stream(agents.moto_url, "i-sched1")
    assert any(m.startswith("overcast.agent - INFO - reported ready") for m in sched_log)
    assert not any(CLUSTER_TOKEN in m for m in sched_log)
    assert not any(m.startswith("botocore") for m in sched_log)

    # The control plane says stop: both exit 0; nothing is reported as failed.
    cloud.action = "stop"
    assert agents.exit_code("i-sched1") == 0
    assert agents.exit_code("i-work1") == 0
    assert cloud.failed == {}
    # Logs were flushed at exit.
    assert any("closing dask scheduler" in m for m in stream(agents.moto_url, "i-sched1"))


@pytest.mark.timeout(60)
def test_agent_sigterm_is_a_graceful_exit(agents: Agents) -> None:
    agents.boot("i-sched2", "scheduler", 4)
    agents.wait(lambda: "i-sched2" in agents.cloud.ready, what="scheduler ready")
    agents.procs["i-sched2"].send_signal(signal.SIGTERM)
    assert agents.exit_code("i-sched2") == 0
    assert agents.cloud.failed == {}
    assert any("closing dask scheduler (signal)" in m for m in stream(agents.moto_url, "i-sched2"))


@pytest.mark.timeout(60)
def test_agent_reports_a_fatal_error(agents: Agents) -> None:
    agents.cloud.tls = dataclasses.replace(agents.cloud.tls, node_key="not a key")
    agents.boot("i-sched3", "scheduler", 5)
    assert agents.exit_code("i-sched3") == 1
    assert "ValueError" in agents.cloud.failed["i-sched3"]
    assert "not a key" not in agents.cloud.failed["i-sched3"]


@pytest.mark.timeout(90)
def test_worker_exits_cleanly_when_its_scheduler_is_stopped(agents: Agents) -> None:
    """Only the scheduler is told to stop; it closes its workers ("scheduler-close"), and each
    worker's agent must then exit 0 promptly without reporting a failure."""
    cloud = agents.cloud
    agents.boot("i-sched4", "scheduler", 6)
    agents.boot("i-work4", "worker", 7)
    agents.boot("i-work5", "worker", 8)
    agents.wait(lambda: {"i-sched4", "i-work4", "i-work5"} <= set(cloud.ready), what="ready")
    cloud.actions["i-sched4"] = "stop"
    assert agents.exit_code("i-sched4") == 0
    assert agents.exit_code("i-work4", timeout=20) == 0
    assert agents.exit_code("i-work5", timeout=20) == 0
    assert cloud.failed == {}
    assert "closed as part of the cluster's shutdown" in agents.stderr("i-work4")
