"""Per-cluster mutual TLS with real dask servers, and the whole agent against a fake control plane.

The fakes (IMDS, control plane) live only here; moto's ThreadedMotoServer stands in for
CloudWatch Logs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ipaddress
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from distributed import Client, Scheduler, Worker
from moto.server import ThreadedMotoServer

from overcast.bootconfig import BootConfig
from overcast.dashboardcred import dashboard_token
from overcast.security import (
    ClusterTLS,
    dask_security,
    generate_cluster_tls,
    issue_dashboard_cert,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tls() -> ClusterTLS:
    return generate_cluster_tls("tls-test")


@pytest.fixture(scope="module")
def other() -> ClusterTLS:
    return generate_cluster_tls("another-cluster")


def _inc(x: int) -> int:
    return x + 1


async def _with_cluster(tls: ClusterTLS, body) -> None:
    node = tls.node_security()
    async with Scheduler(host="127.0.0.1", port=0, dashboard_address=":0", security=node) as s:
        assert s.address.startswith("tls://")
        async with Worker(s.address, security=node, nthreads=1, host="127.0.0.1"):
            await body(s)


@pytest.mark.timeout(60)
def test_client_with_cluster_cert_connects_and_computes(tls: ClusterTLS) -> None:
    async def body(s: Scheduler) -> None:
        async with Client(s.address, security=tls.client_security(), asynchronous=True) as c:
            assert await c.submit(_inc, 41) == 42
            assert len(s.workers) == 1

    asyncio.run(_with_cluster(tls, body))


async def _refused(address: str, exc: type | tuple = OSError, **kwargs) -> BaseException:
    """Assert a Client cannot connect, quickly; return the error."""
    start = time.monotonic()
    client = Client(address, asynchronous=True, timeout="3s", **kwargs)
    try:
        with pytest.raises(exc) as info:
            await client
    finally:
        await client.close()
    assert time.monotonic() - start < 10
    return info.value


@pytest.mark.timeout(60)
def test_client_without_security_is_refused(tls: ClusterTLS) -> None:
    async def body(s: Scheduler) -> None:
        # No ssl context at all: distributed refuses to dial tls:// ...
        await _refused(s.address, TypeError)
        # ... and a plaintext dial of the TLS port is reset by the listener.
        await _refused(s.address.replace("tls://", "tcp://"))
        assert not [c for c in s.clients if c != "fire-and-forget"]

    asyncio.run(_with_cluster(tls, body))


@pytest.mark.timeout(60)
def test_tls_client_without_certificate_is_refused_by_the_server(tls: ClusterTLS) -> None:
    """Below distributed: a TLS client that trusts the cluster CA but presents no certificate.
    The handshake must fail on the server side (verify_mode CERT_REQUIRED)."""

    async def body(s: Scheduler) -> None:
        host, port = s.address.removeprefix("tls://").rsplit(":", 1)
        ctx = ssl.create_default_context(cadata=tls.ca_cert)
        ctx.check_hostname = False

        def dial() -> bytes:
            with socket.create_connection((host, int(port)), timeout=5) as raw:
                with ctx.wrap_socket(raw) as conn:
                    # TLS 1.3: the server's verdict on the (missing) client certificate arrives
                    # after the client's side of the handshake, on the first read.
                    conn.sendall(b"\0" * 8)
                    return conn.recv(1)

        # Depending on timing the refusal shows as the server's "certificate required" alert, an
        # EOF in the handshake, or a reset; the server logs PEER_DID_NOT_RETURN_A_CERTIFICATE.
        with pytest.raises((ssl.SSLError, ConnectionError)):
            data = await asyncio.get_running_loop().run_in_executor(None, dial)
            if data == b"":
                raise ConnectionResetError("closed by the server")

    asyncio.run(_with_cluster(tls, body))


@pytest.mark.timeout(60)
def test_client_with_another_clusters_cert_is_refused(tls: ClusterTLS, other: ClusterTLS) -> None:
    async def body(s: Scheduler) -> None:
        # Another cluster's credentials altogether: the client does not trust this scheduler.
        await _refused(s.address, security=other.client_security())
        # Trusts the right CA but presents another cluster's certificate: the scheduler
        # (CERT_REQUIRED, this cluster's CA only) refuses it.
        mixed = dask_security(tls.ca_cert, other.client_cert, other.client_key)
        err = await _refused(s.address, security=mixed)
        assert "unknown ca" in str(err).lower() or "certificate" in str(err).lower()
        assert not [c for c in s.clients if c != "fire-and-forget"]

    asyncio.run(_with_cluster(tls, body))


@pytest.mark.timeout(60)
def test_worker_of_another_cluster_cannot_join(tls: ClusterTLS, other: ClusterTLS) -> None:
    async def body(s: Scheduler) -> None:
        with pytest.raises((OSError, asyncio.TimeoutError)):
            async with Worker(
                s.address,
                security=other.node_security(),
                nthreads=1,
                host="127.0.0.1",
                death_timeout="3s",
            ):
                pass
        assert len(s.workers) == 1

    asyncio.run(_with_cluster(tls, body))


# --- the whole agent: real agent processes, a fake IMDS + control plane, moto for CloudWatch ---

CLUSTER_ID = 7
CLUSTER_TOKEN = "e2e-cluster-token"
LOG_GROUP = "acme"
REGION = "us-east-1"


class FakeCloud(ThreadingHTTPServer):
    """One HTTP server playing both the per-instance IMDS (``/<instance id>/latest/...``, like the
    local runner) and the control plane's four agent routes (``/api/v1/agent/...``)."""

    daemon_threads = True

    def __init__(self, tls: ClusterTLS) -> None:
        super().__init__(("127.0.0.1", 0), _FakeHandler)
        self.tls = tls
        self.instances: dict[str, dict] = {}  # instance id -> {"ip", "user_data"}
        self.scheduler_address: str | None = None
        self.ready: dict[str, dict] = {}
        self.heartbeats: dict[str, list[dict]] = {}
        self.failed: dict[str, str] = {}
        self.action = "continue"
        self.actions: dict[str, str] = {}  # per-instance override of `action`
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _FakeHandler(BaseHTTPRequestHandler):
    server: FakeCloud

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: object = None, text: str | None = None) -> None:
        data = (text if text is not None else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _imds(self, method: str) -> None:
        instance_id, _, path = self.path.lstrip("/").partition("/")
        inst = self.server.instances.get(instance_id)
        if inst is None:
            return self._send(404, text="")
        if method == "PUT":
            return self._send(200, text="imds-token") if path == "latest/api/token" else None
        if self.headers.get("X-aws-ec2-metadata-token") != "imds-token":
            return self._send(401, text="")
        creds = {
            "Code": "Success",
            "Type": "AWS-HMAC",
            "AccessKeyId": "ASIAFAKE",
            "SecretAccessKey": "fake",
            "Token": "fake",
            "Expiration": (
                datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=6)
            ).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "LastUpdated": "2020-01-01T00:00:00Z",
        }
        items = {
            "latest/user-data": inst["user_data"],
            "latest/meta-data/instance-id": instance_id,
            "latest/meta-data/local-ipv4": inst["ip"],
            "latest/meta-data/public-ipv4": inst["ip"],
            "latest/meta-data/placement/availability-zone": "us-east-1a",
            "latest/meta-data/iam/security-credentials/": "overcast-acme",
            "latest/meta-data/iam/security-credentials/overcast-acme": json.dumps(creds),
        }
        if path in items:
            return self._send(200, text=items[path])
        self._send(404, text="")

    def _agent(self, method: str) -> None:
        prefix = f"/api/v1/agent/clusters/{CLUSTER_ID}"
        if self.headers.get("Authorization") != f"Bearer {CLUSTER_TOKEN}":
            return self._send(401, {"detail": "bad token"})
        if not self.path.startswith(prefix):
            return self._send(404, {"detail": "no such cluster"})
        path = self.path[len(prefix) :]
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        srv = self.server
        with srv.lock:
            if method == "GET" and path == "/tls":
                return self._send(
                    200,
                    {
                        "ca_cert": srv.tls.ca_cert,
                        "cert": srv.tls.node_cert,
                        "key": srv.tls.node_key,
                    },
                )
            if method == "POST" and path == "/dashboard-cert":
                ips = [ipaddress.ip_address(ip) for ip in body["ips"]]
                cert, key = issue_dashboard_cert(srv.tls.ca_cert, srv.tls.ca_key, "fake", ips)
                return self._send(200, {"cert": cert, "key": key})
            if method == "GET" and path == "/scheduler":
                return self._send(200, {"address": srv.scheduler_address})
            parts = path.strip("/").split("/")  # instances/<id>/<verb>
            if method == "POST" and len(parts) == 3 and parts[0] == "instances":
                instance_id, verb = parts[1], parts[2]
                if verb == "ready":
                    srv.ready[instance_id] = body
                    if instance_id.startswith("i-sched"):
                        srv.scheduler_address = body["address"]
                    return self._send(200, {})
                if verb == "heartbeat":
                    srv.heartbeats.setdefault(instance_id, []).append(body)
                    return self._send(200, {"action": srv.actions.get(instance_id, srv.action)})
                if verb == "failed":
                    srv.failed[instance_id] = body["reason"]
                    return self._send(200, {})
        self._send(404, {"detail": "no such route"})

    def do_GET(self) -> None:
        (self._agent if self.path.startswith("/api/") else self._imds)("GET")

    def do_POST(self) -> None:
        self._agent("POST")

    def do_PUT(self) -> None:
        self._imds("PUT")


def _worker_facts(dask_worker: Worker) -> dict:
    return {
        "name": dask_worker.name,
        "resources": dask_worker.state.total_resources,
        "nthreads": dask_worker.state.nthreads,
    }


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_logs() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    _logs(url).create_log_group(logGroupName=LOG_GROUP)
    yield url
    server.stop()


def _logs(endpoint: str):
    import boto3

    return boto3.client(
        "logs",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )


@pytest.fixture
def cloud(tls: ClusterTLS) -> Iterator[FakeCloud]:
    server = FakeCloud(tls)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


class Agents:
    def __init__(self, cloud: FakeCloud, moto_url: str, log_dir: Path) -> None:
        self.cloud = cloud
        self.moto_url = moto_url
        self.log_dir = log_dir  # agents' stderr (a file, not a pipe nobody drains)
        self.procs: dict[str, subprocess.Popen] = {}
        # A random 127.x.y.z per test run: other suites may be using 127.10.0.x:8786.
        self.net = f"127.{random.randint(64, 250)}.{random.randint(0, 250)}"

    def boot(self, instance_id: str, role: str, ip_suffix: int, **overrides) -> None:
        ip = f"{self.net}.{ip_suffix}"
        boot = BootConfig(
            control_plane=self.cloud.url,
            cluster_id=CLUSTER_ID,
            cluster_token=CLUSTER_TOKEN,
            role=role,
            log_group=LOG_GROUP,
            region=REGION,
            scheduler_port=_free_port(ip),
            dashboard_port=_free_port(ip),
            nthreads=1,
            heartbeat_interval=0.2,
            **overrides,
        )
        self.cloud.instances[instance_id] = {"ip": ip, "user_data": boot.to_user_data()}
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AWS_") and not k.startswith("DASK_")
        }
        env.update(
            AWS_EC2_METADATA_SERVICE_ENDPOINT=f"{self.cloud.url}/{instance_id}",
            AWS_ENDPOINT_URL=self.moto_url,
            AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
            AWS_CONFIG_FILE="/nonexistent",
            DASK_DISTRIBUTED__WORKER__MEMORY__TARGET="false",
        )
        with open(self.log_dir / f"{instance_id}.log", "w") as stderr:
            self.procs[instance_id] = subprocess.Popen(
                [sys.executable, "-m", "overcast.agent"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def stderr(self, instance_id: str) -> str:
        return (self.log_dir / f"{instance_id}.log").read_text()[-4000:]

    def wait(self, predicate, timeout: float = 60, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            for iid, p in self.procs.items():
                if p.poll() is not None and p.returncode != 0:
                    pytest.fail(f"agent {iid} exited {p.returncode}:\n{self.stderr(iid)}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}")
            time.sleep(0.05)

    def exit_code(self, instance_id: str, timeout: float = 30) -> int:
        return self.procs[instance_id].wait(timeout)

    def stop_all(self) -> None:
        for p in self.procs.values():  # only the processes this fixture started
            if p.poll() is None:
                p.kill()
                p.wait(10)


@pytest.fixture
def agents(cloud: FakeCloud, moto_logs: str, tmp_path: Path) -> Iterator[Agents]:
    a = Agents(cloud, moto_logs, tmp_path)
    yield a
    a.stop_all()


def _stream(moto_url: str, instance_id: str) -> list[str]:
    logs = _logs(moto_url)
    try:
        resp = logs.get_log_events(
            logGroupName=LOG_GROUP, logStreamName=instance_id, startFromHead=True
        )
    except logs.exceptions.ResourceNotFoundException:  # the agent has not created it yet
        return []
    return [e["message"] for e in resp["events"]]


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
            "distributed.scheduler - INFO" in m for m in _stream(agents.moto_url, "i-sched1")
        ),
        15,
        "scheduler logs",
    )
    agents.wait(
        lambda: any("distributed.worker - INFO" in m for m in _stream(agents.moto_url, "i-work1")),
        15,
        "worker logs",
    )
    sched_log = _stream(agents.moto_url, "i-sched1")
    assert any(m.startswith("overcast.agent - INFO - reported ready") for m in sched_log)
    assert not any(CLUSTER_TOKEN in m for m in sched_log)
    assert not any(m.startswith("botocore") for m in sched_log)

    # The control plane says stop: both exit 0; nothing is reported as failed.
    cloud.action = "stop"
    assert agents.exit_code("i-sched1") == 0
    assert agents.exit_code("i-work1") == 0
    assert cloud.failed == {}
    # Logs were flushed at exit.
    assert any("closing dask scheduler" in m for m in _stream(agents.moto_url, "i-sched1"))


@pytest.mark.timeout(60)
def test_agent_sigterm_is_a_graceful_exit(agents: Agents) -> None:
    agents.boot("i-sched2", "scheduler", 4)
    agents.wait(lambda: "i-sched2" in agents.cloud.ready, what="scheduler ready")
    agents.procs["i-sched2"].send_signal(signal.SIGTERM)
    assert agents.exit_code("i-sched2") == 0
    assert agents.cloud.failed == {}
    assert any("closing dask scheduler (signal)" in m for m in _stream(agents.moto_url, "i-sched2"))


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
