"""The walking skeleton end to end: a real cluster on the local cloud, read back with boto3."""

from __future__ import annotations

import socket
import ssl
import time

import httpx
import pytest
from distributed import Client

import overcast
from overcast import tags

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300),
              pytest.mark.stores("sqlite", "postgresql")]


def api_get(stack, path: str):
    response = httpx.get(f"{stack.url}/api/v1{path}",
                         headers={"Authorization": f"Bearer {stack.token}"}, timeout=10)
    response.raise_for_status()
    return response.json()


def cluster_filter(cluster_id: int) -> list[dict]:
    return [{"Name": f"tag:{tags.CLUSTER}", "Values": [str(cluster_id)]}]


def cluster_instances(ec2, cluster_id: int) -> list[dict]:
    pages = ec2.describe_instances(Filters=cluster_filter(cluster_id))["Reservations"]
    return [i for r in pages for i in r["Instances"]]


@pytest.fixture(scope="module")
def running(stack):
    """One 2-worker cluster for the read-back tests of this module."""
    import os

    import dask
    os.environ["AWS_ENDPOINT_URL"] = stack.endpoint
    with dask.config.set({"overcast.server": stack.url, "overcast.token": stack.token,
                          "overcast.account": stack.account}):
        cluster = overcast.Cluster(name="lifecycle", n_workers=2)
        try:
            yield cluster
        finally:
            cluster.close()


def test_two_workers_compute_then_close_leaves_nothing(running, stack, aws):
    with Client(running) as client:
        client.wait_for_workers(2, timeout=60)
        assert len(client.scheduler_info()["workers"]) == 2
        assert client.submit(sum, [1, 2, 3]).result() == 6
    info = api_get(stack, f"/accounts/{stack.account}/clusters/lifecycle")
    running.close()
    assert api_get(stack, f"/accounts/{stack.account}/clusters/lifecycle")["state"] == "stopped"
    ec2 = aws("ec2")
    states = {i["InstanceId"]: i["State"]["Name"] for i in cluster_instances(ec2, info["id"])}
    assert len(states) == 3 and set(states.values()) == {"terminated"}
    groups = ec2.describe_security_groups(Filters=cluster_filter(info["id"]))["SecurityGroups"]
    assert groups == []


@pytest.fixture(scope="module")
def resources_cluster(stack):
    import dask
    with dask.config.set({"overcast.server": stack.url, "overcast.token": stack.token,
                          "overcast.account": stack.account}):
        cluster = overcast.Cluster(name="resources", n_workers=2)
        try:
            with Client(cluster) as client:
                client.wait_for_workers(2, timeout=60)
                client.submit(sum, [1, 2]).result()
            yield api_get(stack, f"/accounts/{stack.account}/clusters/resources")
        finally:
            cluster.close()


def test_network_iam_and_logs_read_back(resources_cluster, stack, aws):
    ec2, slug = aws("ec2"), stack.account
    by_id = {i["InstanceId"]: i for i in cluster_instances(ec2, resources_cluster["id"])}
    scheduler = [i for i in by_id.values() if tags.from_aws(i["Tags"])[tags.ROLE] == "scheduler"]
    workers = [i for i in by_id.values() if tags.from_aws(i["Tags"])[tags.ROLE] == "worker"]
    assert len(scheduler) == 1 and len(workers) == 2
    subnets = {s["SubnetId"]: s for s in ec2.describe_subnets()["Subnets"]}
    assert subnets[scheduler[0]["SubnetId"]]["MapPublicIpOnLaunch"] is True
    for worker in workers:
        assert subnets[worker["SubnetId"]]["MapPublicIpOnLaunch"] is False
    vpc = ec2.describe_vpcs(VpcIds=[scheduler[0]["VpcId"]])["Vpcs"][0]
    assert tags.from_aws(vpc["Tags"])[tags.MANAGED] == "true"
    for subnet_id in {i["SubnetId"] for i in by_id.values()}:
        assert tags.from_aws(subnets[subnet_id]["Tags"])[tags.MANAGED] == "true"
    assert ec2.describe_nat_gateways(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])[
        "NatGateways"]
    iam = aws("iam")
    assert iam.get_role(RoleName=slug)["Role"]["RoleName"] == slug
    profile = iam.get_instance_profile(InstanceProfileName=slug)["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [slug]
    logs = aws("logs")
    group = logs.describe_log_groups(logGroupNamePrefix=slug)["logGroups"][0]
    assert group["logGroupName"] == slug and group["retentionInDays"] == 30
    deadline = time.monotonic() + 20
    while True:  # the agents flush their logs about every second
        streams = {s["logStreamName"] for s in
                   logs.describe_log_streams(logGroupName=slug)["logStreams"]}
        if set(by_id) <= streams or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(by_id) <= streams
    sched_id = scheduler[0]["InstanceId"]
    events = logs.get_log_events(logGroupName=slug, logStreamName=sched_id)["events"]
    assert any("distributed.scheduler" in e["message"] for e in events)


def test_client_without_cluster_certificate_is_refused(resources_cluster, stack):
    from distributed import Client as DaskClient

    from overcast.security import dask_security, generate_cluster_tls
    address = resources_cluster["scheduler_address"]
    assert address.startswith("tls://")
    creds = httpx.get(f"{stack.url}/api/v1/accounts/{stack.account}/clusters/resources/"
                      "credentials", headers={"Authorization": f"Bearer {stack.token}"}).json()
    other = generate_cluster_tls("another-cluster")
    with pytest.raises((OSError, TimeoutError)):
        DaskClient(address, security=dask_security(other.ca_cert, other.client_cert,
                                                   other.client_key), timeout=3)
    # TLS that trusts the cluster's CA but shows no client certificate: the scheduler hangs up.
    host, port = address.removeprefix("tls://").rsplit(":", 1)
    context = ssl.create_default_context(cadata=creds["ca_cert"])
    context.check_hostname = False
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with context.wrap_socket(raw) as tls:
                tls.sendall(b"hello")
                tls.recv(1)
    with DaskClient(address, security=dask_security(creds["ca_cert"], creds["cert"],
                                                    creds["key"]), timeout=10) as client:
        assert client.submit(sum, [2, 2]).result() == 4
