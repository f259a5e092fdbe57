"""overcast/agent/bootstrap.sh for real: a container of a stock Debian 12 root file system
(mmdebstrap minbase + python3, python3-venv, ca-certificates) runs it against a real control
plane, which serves its agent wheel and takes the builder's one-time report.

Needs a container engine and the stock image: `OVERCAST_TEST_DOCKER_IMAGE=<image>` (and
DOCKER_HOST if the engine is not at the default socket); skipped otherwise. The local cloud's
container engine will provide both (docs/boot-path.md, "Checked for real").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

import overcast
from overcast import crypto
from overcast.store.db import Database
from overcast.store.models import Image
from tests.e2e.stack import Proc, cli, free_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
IMAGE = os.environ.get("OVERCAST_TEST_DOCKER_IMAGE")
LABEL = "overcast-test=bootstrap-script"
SCRIPT = Path(overcast.__file__).parent / "agent" / "bootstrap.sh"


def docker(*args: str, timeout: float = 60, check: bool = True) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          check=check).stdout


@pytest.mark.skipif(not IMAGE or not shutil.which("docker"),
                    reason="set OVERCAST_TEST_DOCKER_IMAGE to a stock Debian 12 image")
def test_bootstrap_installs_the_agent_and_reports(tmp_path, monkeypatch):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OVERCAST_HOME": str(tmp_path), "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "y"}
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))  # the server's secret.key, too
    db = Database(f"sqlite:///{tmp_path / 'overcast.db'}")
    db.migrate()
    token = "build-token-for-the-test"
    with db.session() as session:  # a build waiting for its builder's report
        row = Image(scope="operator", region="us-east-1", version=overcast.__version__,
                    state="building", token_encrypted=crypto.encrypt(token),
                    # This server's AWS is unreachable: its reconciler only retries (warnings).
                    builder_id="i-0000000000000000f")
        session.add(row)
        session.commit()
        build_id = row.id
    server = Proc("bootstrap-server", cli("server", "--port", str(port)), env, tmp_path)
    committed = f"overcast-test/bootstrapped:{port}"
    try:
        wait_for(lambda: httpx.get(url + "/api/v1/health", timeout=2).status_code == 200, 60,
                 "the control plane", server)
        mounts = ["-v", f"{SCRIPT}:/opt/overcast/bootstrap.sh:ro"]
        for path in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf"):
            if Path(path).exists():  # the machine's egress settings, as a VPC's NAT would be
                mounts += ["-v", f"{path}:{path}:ro"]
        settings = {"OVERCAST_CONTROL_PLANE": url, "OVERCAST_VERSION": overcast.__version__,
                    "OVERCAST_BUILD_ID": str(build_id), "OVERCAST_BUILD_TOKEN": token,
                    "OVERCAST_CONTAINER_RUNTIME": "skip"}
        envs = [arg for k, v in settings.items() for arg in ("-e", f"{k}={v}")]
        name = f"overcast-bootstrap-{port}"
        run = subprocess.run(["docker", "run", "--name", name, "--label", LABEL,
                              "--network", "host", *mounts, *envs, IMAGE,
                              "/bin/sh", "/opt/overcast/bootstrap.sh"],
                             capture_output=True, text=True, timeout=800)
        log = run.stdout + run.stderr
        assert run.returncode == 0, log[-3000:]
        assert "overcast-bootstrap: OK" in log and f"overcast-agent {overcast.__version__}" in log
        with db.session() as session:
            row = session.get(Image, build_id)
            assert row.reported == "ok", log[-1500:]
            assert row.token_encrypted is None  # one-time token
        # The image that CreateImage would take: the agent, its service, no build secrets.
        docker("commit", name, committed)
        check = docker("run", "--rm", "--label", LABEL, "--network", "none", committed,
                       "/bin/sh", "-c",
                       "test -x /usr/local/sbin/overcast-agent-start && "
                       "test -f /etc/systemd/system/overcast-agent.service && "
                       "test ! -e /etc/overcast/build.env && "
                       "cat /etc/overcast/image.json && echo && "
                       "/opt/overcast/venv/bin/python -c 'import importlib.util as u, "
                       "overcast.agent.main; print(u.find_spec(\"overcast.server\"))'",
                       timeout=120)
        image_json, server_spec = check.strip().splitlines()[-2:]
        assert json.loads(image_json)["version"] == overcast.__version__
        assert server_spec == "None"
    finally:
        server.stop()
        for cid in docker("ps", "-aq", "--filter", f"label={LABEL}", check=False).split():
            docker("rm", "-f", cid, check=False)
        docker("rmi", "-f", committed, check=False)
