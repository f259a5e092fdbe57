"""Two control planes in one AWS account (staging and production): each touches only what
carries its own deployment id. A second one with the same account slug neither adopts the
first one's instance role nor sweeps the first one's running instances."""

from __future__ import annotations

import time

import httpx
import pytest
from distributed import Client

import overcast
from overcast import tags
from overcast.server.bootstrap import ensure_first_user
from overcast.store.db import Database
from tests.e2e.helpers import wait
from tests.e2e.stack import Proc, cli, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
SWEEP_INTERVAL = 30.0  # reconciler/sweeper.py: the second sweep comes this long after the first


def _instances(ec2, cluster_id: int) -> list[dict]:
    found = ec2.describe_instances(Filters=[
        {"Name": f"tag:{tags.CLUSTER}", "Values": [str(cluster_id)]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return [i for r in found["Reservations"] for i in r["Instances"]]


def _second_control_plane(stack, home):
    keys = stack.operator_keys()
    port = free_port()
    env = {**stack.base_env, "OVERCAST_HOME": str(home), "AWS_ENDPOINT_URL": stack.endpoint,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": keys["access_key_id"],
           "AWS_SECRET_ACCESS_KEY": keys["secret_access_key"]}
    proc = Proc("server-second", cli("server", "--port", str(port), "--deployment-id",
                                     "d-second"), env, home)
    url = f"http://127.0.0.1:{port}"
    wait(lambda: proc.alive() and _answers(url), 60, "the second control plane")
    return proc, url


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/api/v1/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_second_control_plane_leaves_the_first_ones_resources_alone(
        overcast_config, aws, tmp_path):
    stack = overcast_config
    first_id = (stack.home / "deployment-id").read_text().strip()
    ec2 = aws("ec2")
    with overcast.Cluster(name="dep-first", n_workers=1) as cluster, Client(cluster) as client:
        assert client.submit(sum, [1, 2]).result() == 3
        cluster_id = cluster.info["id"]
        ours = _instances(ec2, cluster_id)
        assert len(ours) == 2
        assert {tags.from_aws(i["Tags"])[tags.DEPLOYMENT] for i in ours} == {first_id}

        home = tmp_path / "second-home"
        home.mkdir()
        proc, url = _second_control_plane(stack, home)
        started = time.monotonic()
        try:
            slug, token = ensure_first_user("e2e-user", Database(
                f"sqlite:///{home / 'overcast.db'}"))
            assert slug == stack.account  # the same slug in the same AWS account
            headers = {"Authorization": f"Bearer {token}"}
            r = httpx.post(f"{url}/api/v1/accounts/{slug}/clusters", headers=headers,
                           json={"name": "dep-second", "n_workers": 1}, timeout=30)
            assert r.status_code == 201, r.text

            def failed():
                info = httpx.get(f"{url}/api/v1/accounts/{slug}/clusters/dep-second",
                                 headers=headers, timeout=10).json()
                return info if info["state"] == "error" else None
            # The instance role named after the slug is the first control plane's: not adopted.
            info = wait(failed, 120, "the second control plane's cluster to fail")
            assert "not created by this overcast control plane" in info["reason"], info
            # Its sweeper has now seen this account: wait for a sweep after that.
            time.sleep(max(0.0, started + SWEEP_INTERVAL + 5 - time.monotonic()))
            assert proc.alive()
        finally:
            proc.stop()
        log = proc.log_path.read_text(errors="replace")
        assert "orphans-removed" not in log and "Terminated" not in log
        # The first control plane's cluster is untouched and still computes.
        assert {i["InstanceId"] for i in _instances(ec2, cluster_id)} == \
            {i["InstanceId"] for i in ours}
        assert client.submit(sum, [3, 4]).result(timeout=30) == 7
