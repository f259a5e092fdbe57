"""Start and stop the real processes of an e2e run: the local cloud and the control plane."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "overcast.cli.main", *args]


class Proc:
    """A child process in its own process group, with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict, log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self.popen = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 15) -> None:
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


def wait_for(check, timeout: float, what: str, proc: Proc | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited while waiting for {what}:\n{proc.tail()}")
        try:
            result = check()
            if result:
                return result
        except (httpx.HTTPError, OSError, ValueError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}" + (f":\n{proc.tail()}" if proc else ""))


class Stack:
    """One local cloud + one control plane sharing an OVERCAST_HOME."""

    def __init__(self, home: Path, extra_cloud_args: tuple[str, ...] = (),
                 database_url: str | None = None, deployment_id: str | None = None) -> None:
        self.home = home
        # The control plane's store: SQLite in the home (the default), or a PostgreSQL URL.
        self.database_url = database_url or f"sqlite:///{home / 'overcast.db'}"
        self.cloud_port, self.imds_port, self.server_port = free_port(), free_port(), free_port()
        self.endpoint = f"http://127.0.0.1:{self.cloud_port}"
        self.url = f"http://127.0.0.1:{self.server_port}"
        self.base_env = {**os.environ, "OVERCAST_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        self.cloud_env = dict(self.base_env)
        self.server_env = {
            **self.base_env, "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1", "OVERCAST_DATABASE_URL": self.database_url,
        }
        self.extra_cloud_args = extra_cloud_args
        self.deployment_id = deployment_id
        self.cloud: Proc | None = None
        self.server: Proc | None = None

    def start_cloud(self) -> None:
        self.cloud = Proc("local-cloud", cli("local-cloud", "--port", str(self.cloud_port),
                                             "--imds-port", str(self.imds_port),
                                             *self.extra_cloud_args),
                          self.cloud_env, self.home)
        info = self.home / "run" / "localcloud.json"
        wait_for(lambda: info.exists() and json.loads(info.read_text())["endpoint"] and
                 httpx.get(self.endpoint + "/moto-api/", timeout=2).status_code < 500,
                 120, "the local cloud", self.cloud)

    def operator_keys(self) -> dict[str, str]:
        """The local cloud's operator admin keys (IAM is enforced: only IAM-made keys sign)."""
        return json.loads((self.home / "run" / "localcloud-operator.json").read_text())

    def start_server(self, name: str = "server") -> None:
        operator = self.operator_keys()
        self.server_env.update(AWS_ACCESS_KEY_ID=operator["access_key_id"],
                               AWS_SECRET_ACCESS_KEY=operator["secret_access_key"])
        cloud = json.loads((self.home / "run" / "localcloud.json").read_text())
        hub = (cloud.get("registries") or {}).get("docker_hub")
        if hub:  # the local cloud's Docker Hub stand-in
            self.server_env["OVERCAST_DOCKER_HUB_URL"] = hub
        if cloud.get("identity_cert"):  # what signs its instance identity documents
            self.server_env["OVERCAST_IDENTITY_CERTS"] = cloud["identity_cert"]
        extra = ("--deployment-id", self.deployment_id) if self.deployment_id else ()
        self.server = Proc(name, cli("server", "--port", str(self.server_port), *extra),
                           self.server_env, self.home)
        wait_for(lambda: httpx.get(self.url + "/api/v1/health", timeout=2).status_code == 200,
                 60, "the control plane", self.server)

    def build_images(self, slug: str, token: str, regions: tuple[str, ...] = ("us-east-1",),
                     timeout: float = 900) -> dict[str, str]:
        """`overcast image build` of the hosted image in each region (in parallel), as an
        operator does after deploying; {region: AMI id}. Clusters then start without waiting
        for a first build."""
        headers = {"Authorization": f"Bearer {token}"}
        api = f"{self.url}/api/v1/accounts/{slug}/images"
        ids = {region: httpx.post(api, json={"region": region}, headers=headers,
                                  timeout=30).raise_for_status().json()["id"]
               for region in regions}

        def done() -> dict[str, str] | None:
            rows = {r["id"]: r for r in httpx.get(api, headers=headers, timeout=30).json()}
            failed = [rows[i] for i in ids.values() if rows[i]["state"] == "error"]
            if failed:
                raise RuntimeError(f"image build failed: {failed}\n"
                                   f"control plane log:\n{self.server.tail(60)}")
            if all(rows[i]["state"] == "available" for i in ids.values()):
                return {region: rows[i]["image_id"] for region, i in ids.items()}
            return None

        return wait_for(done, timeout, f"the overcast image in {', '.join(regions)}",
                        self.server)

    def stop(self) -> None:
        for proc in (self.server, self.cloud):
            if proc is not None:
                proc.stop()
