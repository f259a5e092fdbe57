"""`overcast local-cloud --hollow`: instances run in EC2 with no container behind them, their
user data and IMDS answers are spooled, and played agents (the agent's own client code) bring a
cluster to running. One hollow stack for the module (no container engine needed)."""

from __future__ import annotations

import json
import time

import boto3
import pytest

from overcast.agent.imds import IMDSClient
from overcast.bootconfig import BootConfig
from tests.e2e.helpers import wait
from tests.e2e.hollowstack import hollow_stack


@pytest.fixture(scope="module")
def hollow():
    with hollow_stack() as bench:
        yield bench


def _ec2(bench):
    keys = bench.stack.operator_keys()
    return boto3.client("ec2", endpoint_url=bench.stack.endpoint, region_name="us-east-1",
                        aws_access_key_id=keys["access_key_id"],
                        aws_secret_access_key=keys["secret_access_key"])


def _spool(bench):
    return bench.player.player.spool


@pytest.mark.timeout(60)
def test_hollow_instances_run_without_containers(hollow):
    ec2 = _ec2(hollow)
    image = hollow.images["us-east-1"]  # made by CreateImage of a hollow builder
    ids = [i["InstanceId"] for i in ec2.run_instances(
        ImageId=image, MinCount=2, MaxCount=2, InstanceType="t3.medium",
        UserData="#!/bin/sh\necho not-run\n")["Instances"]]
    try:
        spool = _spool(hollow)
        wait(lambda: all((spool / f"{i}.json").exists() for i in ids), 20, "the spool files")
        time.sleep(1)  # a booting container would show by now
        states = {i["InstanceId"]: i["State"]["Name"]
                  for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]
                  for i in r["Instances"]}
        assert set(states.values()) == {"running"}
        for iid in ids:
            entry = json.loads((spool / f"{iid}.json").read_text())
            assert (spool / f"{iid}.json").stat().st_mode & 0o077 == 0  # holds user data
            # The IMDS answers as for a booted instance (the real agent's client over HTTP).
            ident = IMDSClient(entry["imds"]).identity()
            assert ident.instance_id == iid and ident.local_ipv4 == entry["address"]
            assert ident.user_data == "#!/bin/sh\necho not-run\n"
            assert entry["metadata"]["user-data"] == ident.user_data
            # The signed identity document is spooled as the IMDS serves it.
            assert entry["metadata"]["dynamic/instance-identity/document"] == ident.document
        # Nothing booted: no container of this local cloud, no console output of a boot.
        console = ec2.get_console_output(InstanceId=ids[0]).get("Output", "")
        assert "hollow instance" in console and "not-run" not in console
        _assert_no_containers(ids)
    finally:
        ec2.terminate_instances(InstanceIds=ids)
    wait(lambda: not any((spool / f"{i}.json").exists() for i in ids), 20,
          "the spool files to go with the instances")


def _assert_no_containers(ids: list[str]) -> None:
    import docker

    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception:  # noqa: BLE001 (no engine on this machine: nothing can have booted)
        return
    try:
        for iid in ids:
            found = client.containers.list(all=True, filters={"label": f"overcast.instance={iid}"})
            assert found == [], f"a container was started for hollow instance {iid}"
    finally:
        client.close()


@pytest.mark.timeout(90)
def test_hollow_cluster_reaches_running_with_played_agents(hollow):
    start = time.monotonic()
    hollow.api.post("/clusters", json={"name": "hollow5", "n_workers": 5}).raise_for_status()
    c = hollow.wait_running("hollow5", 5, 60)
    assert (c["state"], c["workers_ready"]) == ("running", 5), c
    assert time.monotonic() - start < 60
    ids = {i["aws_id"] for i in c["instances"]}
    played = {iid: p for iid, p in list(hollow.player.player.played.items()) if iid in ids}
    assert sorted(p.role for p in played.values()) == ["scheduler"] + ["worker"] * 5
    assert all(p.ready_at is not None for p in played.values())
    scheduler = next(i for i in c["instances"] if i["role"] == "scheduler")
    # The scheduler address is the played agent's report: the instance's own loopback address.
    entry = played[scheduler["aws_id"]].entry
    boot = BootConfig.from_user_data(entry["metadata"]["user-data"])
    assert c["scheduler_address"] == f"tls://{entry['address']}:{boot.scheduler_port}"
    # Heartbeats flow (the agent's own loop), then a stop ends every played agent.
    wait(lambda: hollow.player.requests().get("POST heartbeat", 0) >= 6, 30, "heartbeats")
    hollow.stop_cluster("hollow5", timeout=60)
    assert hollow.cluster("hollow5")["state"] == "stopped"
    wait(lambda: all(p.outcome is not None for p in played.values()), 30,
          "the played agents to end")
    assert not [p.outcome for p in played.values() if str(p.outcome).startswith("error")]
    assert hollow.player.player.errors == []
