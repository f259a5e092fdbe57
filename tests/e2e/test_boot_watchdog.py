"""The instance-side watchdog: with the control plane gone, a cluster's VMs power themselves
off after `shutdown_after_unreachable`, and the cloud shows them terminated by their own
shutdown. Also: the boot document reaches VMs as a cloud-init document; and a boot that fails
(an image whose agent cannot start) ends the cluster in error within the boot timeout, the
error quoting the VM's console output (GetConsoleOutput)."""

from __future__ import annotations

import base64
import time

import pytest
import yaml

import overcast
from overcast import tags
from overcast.reconciler.timeouts import Timeouts
from overcast.store.db import Database
from overcast.store.models import Image
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
        # heartbeat interval (2 s) before the kill.
        assert took >= 1.0, took
        print(f"VMs terminated {took:.1f} s after the control plane was killed")
        for inst in _instances(aws, ids):
            assert inst["State"]["Name"] == "terminated"
            assert inst["StateReason"]["Code"].startswith("Client.InstanceInitiatedShutdown")
    finally:
        stack.start_server()  # the shared stack, for the tests after this one
    call(stack, "DELETE", "/clusters/watchdog")
    wait_state(stack, "watchdog", ("stopped", "error"), 60)


# Turns an instance of the overcast image into a broken image: its agent cannot import dask.
BREAK = """#!/bin/sh
rm -rf /opt/overcast/venv/lib/python3*/site-packages/distributed
echo "broke the agent's environment"
poweroff
"""


def _broken_image(aws, region: str, built: str) -> str:
    """A real AMI made from the overcast image with `distributed` removed from the agent's venv
    (CreateImage of a stopped instance that removed it), tagged as the pipeline tags its own."""
    ec2 = aws("ec2", region)
    maker = ec2.run_instances(ImageId=built, InstanceType="t3.medium", MinCount=1, MaxCount=1,
                              UserData=BREAK, InstanceInitiatedShutdownBehavior="stop")
    maker_id = maker["Instances"][0]["InstanceId"]
    try:
        ec2.get_waiter("instance_stopped").wait(InstanceIds=[maker_id],
                                                WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        assert "broke the agent's environment" in ec2.get_console_output(
            InstanceId=maker_id)["Output"]
        image = ec2.create_image(InstanceId=maker_id, Name=f"broken-{maker_id}",
                                 TagSpecifications=[{"ResourceType": "image", "Tags": [
                                     {"Key": tags.MANAGED, "Value": "true"}]}])["ImageId"]
        ec2.get_waiter("image_available").wait(ImageIds=[image],
                                               WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        return image
    finally:
        ec2.terminate_instances(InstanceIds=[maker_id])


def test_a_failed_boot_ends_the_cluster_in_error_quoting_the_console(stack, aws):
    """The hosted image of a region is broken (its agent dies at start): the cluster's VM
    powers itself off, and the cluster ends in error well within the boot timeout, its error
    notification quoting what the VM printed."""
    region = "us-west-1"  # a region of its own: the other tests' clusters keep the good image
    broken = _broken_image(aws, region, stack.images[region])
    db = Database(stack.database_url)
    with db.session() as session:  # the operator's image of the region is now the broken one
        row = Image(scope=tags.OPERATOR, region=region, version=overcast.__version__,
                    state="available", aws_id=broken, name=f"overcast-agent-broken-{broken}")
        session.add(row)
        session.commit()
        row_id = row.id
    try:
        started = time.monotonic()
        created = call(stack, "POST", "/clusters", json={
            "name": "broken-boot", "n_workers": 1, "backend_options": {"region": region}})
        info = wait_state(stack, "broken-boot", ("running", "error", "stopped"), 150)
        took = time.monotonic() - started
        assert info["state"] == "error", info
        assert took < Timeouts().boot, took  # the VM's own power-off says it, not a timeout
        notes = call(stack, "GET", "/notifications?cluster=broken-boot&event_type=cluster-error")
        assert len(notes) == 1
        message = notes[0]["message"]
        scheduler = next(i["aws_id"] for i in info["instances"] if i["role"] == "scheduler")
        assert f"The scheduler instance {scheduler} failed" in message
        assert f"Last console output of {scheduler}:" in message
        # From the console, not from the agent's report: the traceback it printed.
        assert "No module named 'distributed'" in message
        assert "Traceback (most recent call last)" in message
        in_region = lambda service: aws(service, region)  # noqa: E731
        assert live_aws_instances(in_region, created["id"]) == set()  # nothing left running
    finally:
        with db.session() as session:
            session.get(Image, row_id).state = "deregistered"
            session.commit()
        db.engine.dispose()
        aws("ec2", region).deregister_image(ImageId=broken)
