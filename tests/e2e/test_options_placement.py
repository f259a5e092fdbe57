"""Backend options end to end: regions, zones, firewall, GPUs, config-file defaults, bad input;
plus the start's notifications (list and live stream) and logs of a stopped cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest
import yaml
from click.testing import CliRunner
from distributed import Client

import overcast
from tests.e2e.readback import api, cluster_info, instances, role, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BAD_INPUT = [
    ({"backend_options": {"region": "mars-1"}}, "Use one of: us-east-1"),
    ({"backend_options": {"region": "us-east-1", "zone": "us-west-2a"}},
     "not a zone of region 'us-east-1'"),
    ({"backend_options": {"firewall": {"ports": [70000], "cidr": "0.0.0.0/0"}}}, "use 1-65535"),
    ({"backend_options": {"firewall": {"ports": [8786], "cidr": "10.2.0.0/33"}}},
     "not a valid CIDR block"),
    ({"worker_gpu": 2}, "workers get one GPU each"),
    ({"worker_vm_types": ["g5.12xlarge"]}, "g5.12xlarge has 4 GPUs: workers get one GPU each"),
    ({"backend_options": {"colour": "blue"}}, "Unknown backend option(s): colour"),
]


def aws_footprint(aws) -> dict:
    out = {}
    for region in ("us-east-1", "us-west-2"):
        ec2 = aws("ec2", region)
        out[region] = (
            sorted(i["InstanceId"] for r in ec2.describe_instances()["Reservations"]
                   for i in r["Instances"]),
            sorted(g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]),
            sorted(s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]),
        )
    return out


def newest_notification(stack) -> int:
    rows = api(stack, "GET", f"/accounts/{stack.account}/notifications", params={"limit": 1})
    return rows[0]["id"] if rows else 0


def test_bad_input_is_refused_before_anything_starts(overcast_config, stack, aws):
    before, last = aws_footprint(aws), newest_notification(stack)
    for k, (kwargs, fragment) in enumerate(BAD_INPUT):
        started = time.monotonic()
        with pytest.raises(overcast.ApiError) as err:
            overcast.Cluster(name=f"bad-{k}", n_workers=1, progress=False, **kwargs)
        assert err.value.status == 400 and fragment in str(err.value), (kwargs, str(err.value))
        assert time.monotonic() - started < 5  # answered at once, no waiting on AWS
    names = {c["name"] for c in api(stack, "GET", f"/accounts/{stack.account}/clusters")}
    assert not {n for n in names if n.startswith("bad-")}  # no row
    assert newest_notification(stack) == last  # nothing happened
    assert aws_footprint(aws) == before  # no AWS resource


def test_region_keyword_puts_instances_in_that_region(overcast_config, stack, aws):
    with overcast.Cluster(name="west", n_workers=1, progress=False,
                          backend_options={"region": "us-west-1"}) as cluster:
        info = cluster_info(stack, cluster.name)
        assert info["region"] == "us-west-1" and info["zone"].startswith("us-west-1")
        found = instances(aws("ec2", "us-west-1"), info["id"])
        assert len(found) == 2
        assert {i["Placement"]["AvailabilityZone"][:-1] for i in found} == {"us-west-1"}
        assert instances(aws("ec2", "us-east-1"), info["id"]) == []


def test_config_file_alone_moves_the_default_region(stack, aws, tmp_path):
    """A fresh Python process whose only settings are the dask config file."""
    # package-sync off as for every e2e cluster but test_env_builds.py's (conftest.py): the
    # DASK_ variable that says so is not passed on, and an image of this venv takes minutes.
    (tmp_path / "overcast.yaml").write_text(yaml.safe_dump({"overcast": {
        "server": stack.url, "token": stack.token, "account": stack.account,
        "backend-options": {"region": "us-west-1"}, "package-sync": False}}))
    script = (
        "import json, overcast\n"
        "c = overcast.Cluster(name='cfg-west', n_workers=1, progress=False)\n"
        "print(json.dumps({'region': c.info['region'], 'id': c.info['id']}))\n"
        "c.close()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    env["DASK_CONFIG"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["region"] == "us-west-1"
    found = instances(aws("ec2", "us-west-1"), seen["id"])
    assert len(found) == 2 and all(i["Placement"]["AvailabilityZone"].startswith("us-west-1")
                                   for i in found)


class EventStream(threading.Thread):
    """Reads the notifications SSE stream of one cluster into a list."""

    def __init__(self, stack, cluster: str) -> None:
        super().__init__(daemon=True)
        self.url = f"{stack.url}/api/v1/accounts/{stack.account}/notifications/stream"
        self.headers = {"Authorization": f"Bearer {stack.token}"}
        self.cluster, self.events, self.content_type = cluster, [], None
        self.connected = threading.Event()

    def run(self) -> None:
        with httpx.stream("GET", self.url, params={"cluster": self.cluster},
                          headers=self.headers, timeout=60) as response:
            self.content_type = response.headers["content-type"]
            for line in response.iter_lines():
                self.connected.set()
                if line.startswith("data:"):
                    self.events.append(json.loads(line[5:]))
                    if self.events[-1]["event_type"] == "cluster-stopped":
                        return


def event_types(rows: list[dict]) -> list[str]:
    return [r["event_type"] for r in rows]


def in_order(seen: list[str], wanted: list[str]) -> bool:
    it = iter(seen)
    return all(any(s == w for s in it) for w in wanted)


START_STEPS = ["cluster-requested", "cluster-starting", "security-group", "scheduler-launched",
               "worker-launched", "scheduler-ready", "cluster-running"]


def test_zone_firewall_gpu_then_notifications_and_logs(overcast_config, stack, aws):
    stream = EventStream(stack, "zone-b")
    stream.start()
    assert stream.connected.wait(10)
    firewall = {"ports": [8786], "cidr": "10.2.0.0/16"}
    cluster = overcast.Cluster(name="zone-b", n_workers=1, worker_gpu=1, progress=False,
                               backend_options={"zone": "us-east-1b", "firewall": firewall})
    try:
        info = cluster_info(stack, "zone-b")
        ec2 = aws("ec2")
        found = instances(ec2, info["id"])
        subnets = ec2.describe_subnets(SubnetIds=[i["SubnetId"] for i in found])["Subnets"]
        assert {s["AvailabilityZone"] for s in subnets} == {"us-east-1b"}
        assert {i["Placement"]["AvailabilityZone"] for i in found} == {"us-east-1b"}
        # Exactly the asked-for rule, plus all traffic within the cluster's own group.
        group = {g["GroupId"] for i in found for g in i["SecurityGroups"]}
        assert len(group) == 1
        group_id = group.pop()
        rules = ec2.describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": [group_id]}])["SecurityGroupRules"]
        ingress = {(r["IpProtocol"], r.get("FromPort"), r.get("ToPort"),
                    r.get("CidrIpv4") or r.get("ReferencedGroupInfo", {}).get("GroupId"))
                   for r in rules if not r["IsEgress"]}
        assert ingress == {("tcp", 8786, 8786, "10.2.0.0/16"), ("-1", -1, -1, group_id)}
        # One GPU per worker: a GPU instance type, and the dask resource GPU=1.
        worker = next(i for i in found if role(i) == "worker")
        assert worker["InstanceType"] == "g4dn.xlarge"
        with Client(cluster) as client:
            resources = client.run(lambda dask_worker: dict(dask_worker.state.total_resources))
            assert list(resources.values()) == [{"GPU": 1}]
            assert client.submit(lambda: 42, resources={"GPU": 1}).result() == 42
        live_logs = cluster.get_logs()  # the Cluster method, while it runs
        assert {i["aws_id"] for i in info["instances"]} <= set(live_logs)
    finally:
        cluster.close()
    assert cluster_info(stack, "zone-b")["state"] == "stopped"

    # The start's steps, in order: the list (newest first) and the live stream agree.
    listed = overcast.get_notifications(cluster="zone-b", json=True)
    assert listed == sorted(listed, key=lambda n: n["id"], reverse=True)
    assert in_order(event_types(listed[::-1]), START_STEPS + ["cluster-stopped"])
    stream.join(20)
    assert stream.content_type.startswith("text/event-stream")
    assert in_order(event_types(stream.events), START_STEPS + ["cluster-stopped"])
    assert [e["id"] for e in stream.events] == sorted(e["id"] for e in listed)

    # Logs of the stopped cluster: Python and CLI.
    ids = {i["aws_id"] for i in info["instances"]}
    last: dict = {}

    def all_logs():
        last.update(overcast.get_logs("zone-b"))
        return set(last) == ids and all(last.values()) and dict(last)
    try:
        logs = wait_until(all_logs, 20, "logs of every instance")
    except AssertionError:
        raise AssertionError({k: v[-300:] for k, v in last.items()}, ids) from None
    scheduler_id = next(i["aws_id"] for i in info["instances"] if i["role"] == "scheduler")
    assert "distributed.scheduler" in logs[scheduler_id]
    from overcast.cli.main import cli
    result = CliRunner().invoke(cli, ["cluster", "logs", "zone-b"])
    assert result.exit_code == 0, result.output
    assert all(f"== {i} ==" in result.output for i in ids)
    assert "distributed.scheduler" in result.output


def test_unknown_instance_type_fails_the_cluster_before_launching(overcast_config, stack, aws):
    with pytest.raises(overcast.ClusterStartError) as err:
        overcast.Cluster(name="bad-type", n_workers=1, progress=False,
                         worker_vm_types=["m6i.huge"])
    assert "Unknown instance type(s) in us-east-1: m6i.huge" in str(err.value)
    info = wait_until(lambda: (c := cluster_info(stack, "bad-type"))["state"] == "error" and c,
                      30, "the cluster to end in error")
    assert info["instances"] == []
    assert instances(aws("ec2"), info["id"]) == []
