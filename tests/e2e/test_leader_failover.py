"""Two control-plane replicas on one PostgreSQL: one leads the reconciler; kill -9 it during
five cluster starts and the other takes over; every cluster ends running, and AWS holds no
instance the database does not know and no instance launched twice."""

from __future__ import annotations

import time
from collections import Counter

import boto3
import httpx
import pytest

from overcast import tags
from overcast.backends.aws.instances import LAUNCH_TOKEN
from overcast.server.bootstrap import ensure_first_user
from overcast.store.db import Database
from tests.e2e.balancer import Balancer
from tests.e2e.helpers import environ
from tests.e2e.stack import Proc, Stack, cli, free_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
CLUSTERS = 5
DEPLOYMENT = "e2e-failover"


def health(url: str) -> dict:
    return httpx.get(f"{url}/api/v1/health", timeout=5).json()


@pytest.fixture
def replicas(tmp_path, postgres):
    """A local cloud, a balancer, and two `overcast server` processes sharing one database
    and deployment id; yields (stack, {url: Proc}, account, token)."""
    stack = Stack(tmp_path, database_url=postgres.create_database("e2e_failover"),
                  deployment_id=DEPLOYMENT)
    second_port = free_port()
    balancer = Balancer([stack.server_port, second_port])
    procs: dict[str, Proc] = {}
    with environ(OVERCAST_HOME=str(tmp_path)):
        try:
            stack.start_cloud()
            balancer.start()
            stack.server_env["OVERCAST_PUBLIC_URL"] = balancer.url  # what instances call
            stack.start_server("server-a")
            procs[stack.url] = stack.server
            url_b = f"http://127.0.0.1:{second_port}"
            procs[url_b] = Proc("server-b", cli("server", "--port", str(second_port),
                                                "--deployment-id", DEPLOYMENT),
                                stack.server_env, tmp_path)
            wait_for(lambda: health(url_b)["status"] == "ok", 60, "replica b", procs[url_b])
            account, token = ensure_first_user("e2e-user", Database(stack.database_url))
            stack.build_images(account, token)  # clusters boot only from the overcast image
            yield stack, procs, account, token
        finally:
            for proc in procs.values():
                proc.stop()
            balancer.stop()
            stack.stop()


def leaders(procs: dict[str, Proc]) -> list[str]:
    return [url for url, proc in procs.items() if proc.alive() and health(url)["leader"]]


def live_instances(stack) -> list[dict]:
    keys = stack.operator_keys()
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=stack.endpoint,
                       aws_access_key_id=keys["access_key_id"],
                       aws_secret_access_key=keys["secret_access_key"])
    pages = ec2.get_paginator("describe_instances").paginate(Filters=[
        {"Name": f"tag:{tags.DEPLOYMENT}", "Values": [DEPLOYMENT]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def test_kill9_leader_during_five_starts(replicas):
    stack, procs, account, token = replicas
    wait_for(lambda: len(leaders(procs)) == 1, 15, "one leader")
    leader = leaders(procs)[0]
    follower = next(url for url in procs if url != leader)
    api = httpx.Client(base_url=f"{follower}/api/v1/accounts/{account}",
                       headers={"Authorization": f"Bearer {token}"}, timeout=10)
    # Created through the follower: the leader picks them up on its next pass.
    ids = [api.post("/clusters", json={"name": f"ha{n}", "n_workers": 1}).json()["id"]
           for n in range(CLUSTERS)]
    wait_for(lambda: live_instances(stack), 60, "the leader's first launch")
    procs[leader].kill9()
    killed_at = time.monotonic()
    wait_for(lambda: leaders(procs) == [follower], 15, "the follower to take over")
    takeover = time.monotonic() - killed_at
    assert takeover < 10, takeover

    def all_running() -> bool:
        states = [api.get(f"/clusters/ha{n}").json()["state"] for n in range(CLUSTERS)]
        assert "error" not in states, states
        return all(s == "running" for s in states)
    wait_for(all_running, 120, "every cluster running")

    known = {i["aws_id"] for n in range(CLUSTERS)
             for i in api.get(f"/clusters/ha{n}").json()["instances"] if i["aws_id"]}
    live = live_instances(stack)
    assert {i["InstanceId"] for i in live} <= known
    # No batch launched twice: one scheduler and one worker per cluster, each batch's
    # instances under one launch token.
    per_cluster = Counter(tag["Value"] for i in live for tag in i.get("Tags", [])
                          if tag["Key"] == tags.CLUSTER)
    assert set(per_cluster.values()) == {2}, per_cluster
    batches = Counter(tag["Value"] for i in live for tag in i.get("Tags", [])
                      if tag["Key"] == LAUNCH_TOKEN)
    assert batches and max(batches.values()) == 1, batches
    assert {int(tag["Value"]) for i in live for tag in i["Tags"]
            if tag["Key"] == tags.CLUSTER} == set(ids)
    for n in range(CLUSTERS):
        api.delete(f"/clusters/ha{n}")
    wait_for(lambda: not live_instances(stack), 60, "every instance terminated")
