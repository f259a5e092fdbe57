"""Zone failover on capacity errors (injected by the local cloud) and spot interruptions."""

from __future__ import annotations

import pytest

import overcast
from tests.e2e.readback import cluster_info, instances, local_cloud, role, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture
def no_capacity_in_zone_a(stack):
    # No count: every RunInstances in us-east-1a fails (botocore's own retries included).
    local_cloud(stack, "POST", "faults", {"action": "RunInstances",
                                          "error": "InsufficientInstanceCapacity",
                                          "zones": ["us-east-1a"]})
    try:
        yield
    finally:
        local_cloud(stack, "DELETE", "faults")


def test_capacity_error_fails_over_unless_the_zone_is_pinned(no_capacity_in_zone_a,
                                                             overcast_config, stack, aws):
    with overcast.Cluster(name="failover", n_workers=1, progress=False) as cluster:
        info = cluster_info(stack, cluster.name)
        assert info["zone"] == "us-east-1b"
        found = [i for i in instances(aws("ec2"), info["id"])
                 if i["State"]["Name"] == "running"]
        assert len(found) == 2
        assert {i["Placement"]["AvailabilityZone"] for i in found} == {"us-east-1b"}
        moved = overcast.get_notifications(cluster="failover", event_type="zone-failover",
                                           json=True)
        assert len(moved) == 1 and moved[0]["level"] == "warning"
        assert "No capacity in us-east-1a" in moved[0]["message"]
        assert "in us-east-1b instead" in moved[0]["message"]

    with pytest.raises(overcast.ClusterStartError) as err:
        overcast.Cluster(name="pinned-a", n_workers=1, progress=False,
                         backend_options={"zone": "us-east-1a"})
    assert "Zone us-east-1a was pinned" in str(err.value)
    assert "no capacity" in str(err.value)
    info = wait_until(lambda: (c := cluster_info(stack, "pinned-a"))["state"] == "error" and c,
                      30, "the pinned cluster to end in error")
    assert "pinned" in info["reason"]
    assert instances(aws("ec2"), info["id"]) == []


def test_spot_workers_interrupted_are_replaced_on_demand(overcast_config, stack, aws):
    cluster = overcast.Cluster(name="spot", n_workers=2, progress=False, backend_options={
        "spot": True, "spot_on_demand_fallback": True})
    try:
        info = cluster_info(stack, "spot")
        ec2 = aws("ec2")
        found = {i["InstanceId"]: i for i in instances(ec2, info["id"])}
        lifecycle = {iid: (role(i), i.get("InstanceLifecycle")) for iid, i in found.items()}
        assert sorted(lifecycle.values(), key=str) == sorted(
            [("scheduler", None), ("worker", "spot"), ("worker", "spot")], key=str)
        victim = next(iid for iid, (r, _) in lifecycle.items() if r == "worker")
        local_cloud(stack, "POST", "spot-interruptions", {"instance_id": victim})

        def replaced():
            now = cluster_info(stack, "spot")
            ready = [i for i in now["instances"] if i["role"] == "worker"
                     and i["state"] == "ready"]
            return len(ready) == 2 and victim not in {i["aws_id"] for i in ready} and now
        now = wait_until(replaced, 60, "the interrupted worker's replacement")
        assert now["state"] == "running"
        gone = next(i for i in now["instances"] if i["aws_id"] == victim)
        assert gone["state"] == "terminated" and gone["reason"] == "spot interruption"
        new_id = next(i["aws_id"] for i in now["instances"] if i["role"] == "worker"
                      and i["state"] == "ready" and i["aws_id"] not in found)
        replacement = ec2.describe_instances(InstanceIds=[new_id])["Reservations"][0][
            "Instances"][0]
        assert replacement.get("InstanceLifecycle") is None  # on-demand (fallback)
        events = [n["event_type"] for n in overcast.get_notifications(cluster="spot", json=True)]
        assert "spot-interrupted" in events and "cluster-error" not in events

        # Losing the scheduler fails the cluster; its logs stay readable afterwards.
        scheduler = next(i["aws_id"] for i in now["instances"] if i["role"] == "scheduler")
        ec2.terminate_instances(InstanceIds=[scheduler])
        failed = wait_until(lambda: (c := cluster_info(stack, "spot"))["state"] == "error"
                            and c, 60, "the cluster to fail")
        assert scheduler in failed["reason"]
        logs = overcast.get_logs("spot")
        assert "distributed.scheduler" in logs[scheduler]
    finally:
        cluster.close()
