"""kill -9 the control plane while a cluster starts: the next server finishes the job."""

from __future__ import annotations

import time

import httpx
import pytest

from overcast import tags

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240),
              pytest.mark.stores("sqlite", "postgresql")]


def call(stack, method: str, path: str, **kwargs):
    response = httpx.request(method, f"{stack.url}/api/v1/accounts/{stack.account}{path}",
                             headers={"Authorization": f"Bearer {stack.token}"}, timeout=10,
                             **kwargs)
    response.raise_for_status()
    return response.json()


def wait_state(stack, name: str, states: tuple[str, ...], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = call(stack, "GET", f"/clusters/{name}")
        if info["state"] in states:
            return info
        time.sleep(0.2)
    raise AssertionError(f"cluster {name} stuck in {info['state']}: {info.get('reason')}")


def live_aws_instances(aws, cluster_id: int) -> set[str]:
    reservations = aws("ec2").describe_instances(Filters=[
        {"Name": f"tag:{tags.CLUSTER}", "Values": [str(cluster_id)]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])["Reservations"]
    return {i["InstanceId"] for r in reservations for i in r["Instances"]}


def test_kill9_while_starting_then_restart(stack, aws):
    created = call(stack, "POST", "/clusters", json={"name": "crash", "n_workers": 3})
    deadline = time.monotonic() + 30
    while not live_aws_instances(aws, created["id"]) and time.monotonic() < deadline:
        time.sleep(0.02)  # kill as soon as the first instance exists, mid-start
    stack.server.kill9()
    stack.start_server()
    info = wait_state(stack, "crash", ("running", "error"), 120)
    assert info["state"] == "running", info["reason"]
    known = {i["aws_id"] for i in info["instances"]
             if i["state"] in ("launched", "booting", "ready")}
    assert live_aws_instances(aws, created["id"]) <= known
    assert sum(1 for i in info["instances"] if i["role"] == "scheduler"
               and i["state"] == "ready") == 1
    call(stack, "DELETE", "/clusters/crash")
    wait_state(stack, "crash", ("stopped",), 60)
    assert live_aws_instances(aws, created["id"]) == set()
    groups = aws("ec2").describe_security_groups(Filters=[
        {"Name": f"tag:{tags.CLUSTER}", "Values": [str(created["id"])]}])["SecurityGroups"]
    assert groups == []
