"""Batched launches end to end: a cluster of 3 workers is one RunInstances for its workers
(read from the control plane's own AWS-call recording), and its agents prove which instance
they are with the local cloud's signed identity documents; forged ones are refused."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from overcast.agent.control import identity_headers
from overcast.bootconfig import BootConfig
from overcast.localcloud.identity import IdentitySigner
from tests.e2e.readback import api, cluster_info, instances, role, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def recording(stack):
    """The shared stack's control plane, restarted recording its AWS calls to a file of this
    module's own (and restarted again with the stack's own recording, which the modules after
    this one read: test_own_account.py checks its actions against the policies)."""
    record = stack.home / "batched-aws-actions.jsonl"
    shared = stack.server_env.get("OVERCAST_RECORD_AWS_ACTIONS")
    stack.server_env["OVERCAST_RECORD_AWS_ACTIONS"] = str(record)
    stack.server.stop()
    stack.start_server("server-recording")
    try:
        yield record
    finally:
        if shared is None:
            stack.server_env.pop("OVERCAST_RECORD_AWS_ACTIONS", None)
        else:
            stack.server_env["OVERCAST_RECORD_AWS_ACTIONS"] = shared
        stack.server.stop()
        stack.start_server()


@pytest.fixture(scope="module")
def batched(stack, recording):
    created = api(stack, "POST", f"/accounts/{stack.account}/clusters",
                  json={"name": "batched", "n_workers": 3})
    info = wait_until(lambda: (c := cluster_info(stack, "batched"))["workers_ready"] == 3 and c,
                      180, "3 workers ready")
    calls = [json.loads(line) for line in recording.read_text().splitlines()]
    yield created["id"], info, calls
    api(stack, "DELETE", f"/accounts/{stack.account}/clusters/batched")
    wait_until(lambda: cluster_info(stack, "batched")["state"] == "stopped", 60, "the stop")


def test_three_workers_launch_with_one_run_instances(batched, aws):
    cluster_id, info, calls = batched
    assert info["state"] == "running"
    actions = [c["action"] for c in calls]
    # One for the scheduler, one for the three workers; no describe before each.
    assert actions.count("ec2:RunInstances") == 2, actions
    assert actions.count("ec2:DescribeInstances") <= 6, actions
    workers = [i for i in instances(aws("ec2"), cluster_id) if role(i) == "worker"]
    reservations = aws("ec2").describe_instances(
        InstanceIds=[i["InstanceId"] for i in workers])["Reservations"]
    assert len(workers) == 3 and len(reservations) == 1


def identity_of(stack, instance_id: str) -> tuple[str, str, BootConfig]:
    """What the instance's own IMDS serves it: its document, signature and boot document."""
    base = json.loads((stack.home / "run" / "localcloud.json").read_text())["imds"]
    get = lambda path: httpx.get(f"{base}/{instance_id}/latest/{path}", timeout=5)  # noqa: E731
    document = get("dynamic/instance-identity/document").text
    signature = get("dynamic/instance-identity/signature").text
    return document, signature, BootConfig.from_user_data(get("user-data").text)


def test_identity_documents_prove_the_instance_and_forgeries_are_refused(
        stack, batched, aws):
    cluster_id, _, _ = batched
    first, second = sorted(i["InstanceId"] for i in instances(aws("ec2"), cluster_id)
                           if role(i) == "worker" and i["State"]["Name"] == "running")[:2]
    document, signature, boot = identity_of(stack, first)
    assert json.loads(document)["instanceId"] == first
    other_document, other_signature, _ = identity_of(stack, second)
    token = {"Authorization": f"Bearer {boot.cluster_token}"}  # the whole batch's user data

    def beat(headers: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{stack.url}/api/v1/agent/clusters/{cluster_id}/instances/{first}"
                          "/heartbeat", headers={**token, **headers}, json={}, timeout=10)

    assert beat(identity_headers(document, signature)).json() == {"action": "continue"}
    forged = {
        "none": {},
        "another instance's": identity_headers(other_document, other_signature),
        "edited": identity_headers(other_document.replace(second, first), other_signature),
        "signed by another key": identity_headers(document, IdentitySigner().sign(document)),
    }
    for what, headers in forged.items():
        r = beat(headers)
        assert r.status_code == 403, (what, r.text)
    time.sleep(0.1)
    assert cluster_info(stack, "batched")["state"] == "running"
