"""The fakes for test_agent_tls_process.py: one HTTP server playing the per-instance IMDS and
the control plane's agent routes, and the agent processes booted against it (their logs go
to moto's CloudWatch Logs)."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from overcast.bootconfig import BootConfig
from overcast.security import ClusterTLS, issue_dashboard_cert

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
        # The query (`?wait=` of the scheduler long-poll) does not pick the route; this fake
        # answers at once, which the agent asks again after a pause.
        path = urlsplit(self.path).path[len(prefix) :]
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


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def logs_client(endpoint: str):
    import boto3

    return boto3.client(
        "logs",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )


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
            scheduler_port=free_port(ip),
            dashboard_port=free_port(ip),
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


def stream(moto_url: str, instance_id: str) -> list[str]:
    """An instance's log lines in CloudWatch Logs, oldest first."""
    logs = logs_client(moto_url)
    try:
        resp = logs.get_log_events(
            logGroupName=LOG_GROUP, logStreamName=instance_id, startFromHead=True
        )
    except logs.exceptions.ResourceNotFoundException:  # the agent has not created it yet
        return []
    return [e["message"] for e in resp["events"]]
