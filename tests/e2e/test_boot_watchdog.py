"""The instance-side watchdog: with the control plane gone, a cluster's VMs power themselves
off after `shutdown_after_unreachable`, and the cloud shows them terminated by their own
shutdown. Also: the boot document reaches VMs as a cloud-init document."""

from __future__ import annotations

import base64
import time

import pytest
import yaml

from tests.e2e.test_crash_safety import call, live_aws_instances, wait_state

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def _instances(aws, ids: set[str]) -> list[dict]:
    found = aws("ec2").describe_instances(InstanceIds=sorted(ids))["Reservations"]
    return [i for r in found for i in r["Instances"]]


def test_vms_power_off_when_the_control_plane_is_unreachable(stack, aws):
    created = call(stack, "POST", "/clusters", json={
        "name": "watchdog", "n_workers": 1,
        "backend_options": {"shutdown_after_unreachable": "3 seconds"}})
    assert created["options"]["shutdown_after_unreachable"] == 3.0
    info = wait_state(stack, "watchdog", ("running", "error"), 120)
    assert info["state"] == "running", info["reason"]
    ids = live_aws_instances(aws, created["id"])
    assert len(ids) == 2
    # The user data is a cloud-init document carrying the boot document, not bare JSON.
    raw = aws("ec2").describe_instance_attribute(InstanceId=sorted(ids)[0],
                                                Attribute="userData")["UserData"]["Value"]
    text = base64.b64decode(raw).decode()
    assert text.startswith("#cloud-config\n")
    files = yaml.safe_load(text)["write_files"]
    assert [(f["path"], f["permissions"]) for f in files] == [("/etc/overcast/boot.json",
                                                               "0600")]
    killed = time.monotonic()
    stack.server.kill9()
    try:
        deadline = killed + 120  # 3 s + a heartbeat, then dask closes (bounded, 10 s)
        while live_aws_instances(aws, created["id"]) and time.monotonic() < deadline:
            time.sleep(0.25)
        took = time.monotonic() - killed
        left = live_aws_instances(aws, created["id"])
        assert left == set(), f"VMs still running after {took:.0f} s: {left}"
        # Not before the setting says: 3 s after the last answer, which came at most one
        # heartbeat interval (15 s +-20% for the worker) before the kill.
        assert took >= 1.0, took
        print(f"VMs terminated {took:.1f} s after the control plane was killed")
        for inst in _instances(aws, ids):
            assert inst["State"]["Name"] == "terminated"
            assert inst["StateReason"]["Code"].startswith("Client.InstanceInitiatedShutdown")
    finally:
        stack.start_server()  # the shared stack, for the tests after this one
    call(stack, "DELETE", "/clusters/watchdog")
    wait_state(stack, "watchdog", ("stopped", "error"), 60)
