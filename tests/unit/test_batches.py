"""Batched launches against the fake provider: one call per (role, zone, type, market), at
most BATCH_MAX each, and a control plane killed between the call and its commit never
launches a batch twice."""

from __future__ import annotations

import pytest

from overcast.backends.base import CapacityError
from overcast.reconciler import batches
from overcast.reconciler.loop import Reconciler
from overcast.store.models import Instance

pytestmark = pytest.mark.timeout(120)


def launches(world) -> list:
    return [i.spec for i in world.fake.instances.values()]


def test_three_workers_are_one_call(world):
    cid = world.create("c", 3)
    world.settle()
    assert world.cluster(cid)["state"] == "running"
    assert world.cluster(cid)["ready"] == 4
    assert world.fake.calls.count("launch") == 2  # the scheduler's batch and the workers'
    workers = [s for s in launches(world) if s.role == "worker"]
    assert {s.count for s in workers} == {3} and len({s.client_token for s in workers}) == 1
    # One user data for the whole batch: it names no instance.
    assert len({s.user_data for s in workers}) == 1
    kinds = [n.event_type for n in world.notifications(cid)]
    assert kinds.count("worker-launched") == 1


def test_large_cluster_is_batches_of_at_most_batch_max(world):
    cid = world.create("big", 250)
    world.settle()
    assert world.cluster(cid)["ready"] == 251
    counts = sorted(s.count for s in {id(s): s for s in launches(world)}.values())
    assert counts == [1, 50, 100, 100]
    assert world.fake.calls.count("launch") == 4
    assert world.orphans() == set()


@pytest.mark.parametrize("honours_token", [True, False], ids=["ec2-like", "moto-like"])
def test_killed_between_the_call_and_its_commit_launches_nothing_twice(
        world, honours_token, monkeypatch):
    """The launch call returns (instances made), then the process dies before recording
    them: a new control plane finds the batch by its token and launches no duplicate."""
    world.fake.honours_client_token = honours_token
    real_launch = world.fake.launch
    killed = []

    def launch_then_die(conn, specs):
        out = real_launch(conn, specs)
        if specs[0].role == "worker" and not killed:
            killed.append(specs[0].client_token)
            raise SystemExit("killed -9 after RunInstances")  # nothing after this commits
        return out

    monkeypatch.setattr(world.fake, "launch", launch_then_die)
    cid = world.create("c", 3)
    with pytest.raises(SystemExit):
        world.reconciler._step(cid)  # the step of the process that dies
    with world.db.session() as s:
        rows = s.query(Instance).filter_by(cluster_id=cid, role="worker").all()
        assert {r.launch_token for r in rows} == set(killed) and not any(r.aws_id for r in rows)
    assert len(world.fake.live()) == 4  # what the dead process launched
    # A new control plane (nothing in memory) on the same database and cloud.
    world.reconciler.stop()
    world.reconciler = Reconciler(world.db, "http://127.0.0.1:9", provider=world.fake,
                                  step_wait=None)
    world.settle()
    assert world.cluster(cid)["state"] == "running"
    assert len(world.fake.live()) == 4 and world.orphans() == set()
    assert world.cluster(cid)["ready"] == 4
    adopted = [n for n in world.notifications(cid) if n.event_type == "instance-adopted"]
    assert len(adopted) == 3


def test_call_that_failed_ambiguously_is_retried_with_its_token(world):
    """A 5xx (the call may or may not have launched): the next pass looks, finds nothing,
    and retries with the same token and count (EC2 would answer with the same instances)."""
    from tests.unit.fake_provider import ERRORS

    world.fake.inject("launch", ERRORS["server"], times=2)
    cid = world.create("c", 2)
    world.settle()
    assert world.cluster(cid)["ready"] == 3
    workers = [s for s in launches(world) if s.role == "worker"]
    assert len(workers) == 2 and workers[0].client_token == workers[1].client_token
    assert len(world.fake.live()) == 3


def no_workers_in_zone_a(world, times: int | None = None) -> list[str]:
    """Workers' launch calls in zone a are refused for capacity (`times` of them, else all);
    returns the refused calls' tokens."""
    real_launch = world.fake.launch
    refused: list[str] = []

    def launch(conn, specs):
        if specs[0].role == "worker" and specs[0].subnet_id.endswith("a") and (
                times is None or len(refused) < times):
            refused.append(specs[0].client_token)
            raise CapacityError("no m6i in a", "us-east-1a",
                                code="InsufficientInstanceCapacity")
        return real_launch(conn, specs)

    world.fake.launch = launch
    return refused


def test_no_capacity_moves_the_whole_batch(world):
    no_workers_in_zone_a(world)
    cid = world.create("c", 3)
    world.settle()
    assert world.cluster(cid)["state"] == "running" and world.cluster(cid)["ready"] == 4
    assert {world.fake.instances[i].info.zone for i in world.fake.live()} == {"us-east-1b"}
    assert any(n.event_type == "zone-failover" for n in world.notifications(cid))


def test_plan_groups_and_keeps_unrecorded_batches():
    def row(i, role="worker", zone="a", itype="m", spot=False, token=None):
        return Instance(id=i, role=role, zone=zone, instance_type=itype, spot=spot,
                        launch_token=token, state="requested")

    token = "overcast-1-5-n2-abc"
    rows = [row(1, "scheduler"), row(2), row(3, spot=True), row(4, zone="b"),
            row(5, token=token), row(6, token=token), row(7)]
    planned = batches.plan(rows)
    assert [[r.id for r in b.rows] for b in planned] == [[5, 6], [1], [2, 7], [3], [4]]
    assert planned[0].token == token and all(b.token is None for b in planned[1:])
    # Rows that left an unrecorded batch (scaled down): what remains is asked anew.
    assert [b.token for b in batches.plan(rows[4:5])] == [None]
    assert len(batches.new_token(2**31 - 1, [row(2**31 - 1)] * 100)) <= 64


def test_a_large_clusters_calls_go_out_together_after_the_first(world, monkeypatch):
    """Up to CONCURRENT_CALLS calls at once per step, the scheduler's among the first; every
    batch keeps its own token, and nothing is launched twice."""
    import threading
    import time

    from overcast.reconciler.launcher import CONCURRENT_CALLS

    real_launch = world.fake.launch
    lock, in_flight, most, order = threading.Lock(), [0], [0], []

    def slow_launch(conn, specs):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            order.append((specs[0].role, in_flight[0]))
        time.sleep(0.2)  # a call that takes a while, as RunInstances of 100 does
        with lock:
            in_flight[0] -= 1
        return real_launch(conn, specs)

    monkeypatch.setattr(world.fake, "launch", slow_launch)
    cid = world.create("big", 1000)
    world.settle()
    assert world.cluster(cid)["state"] == "running" and world.cluster(cid)["ready"] == 1001
    assert "scheduler" in [role for role, _ in order[:CONCURRENT_CALLS]]
    assert 1 < most[0] <= CONCURRENT_CALLS
    workers = [s for s in launches(world) if s.role == "worker"]
    assert len({s.client_token for s in workers}) == 10
    assert len(world.fake.live()) == 1001 and world.orphans() == set()


def test_no_capacity_for_one_of_the_calls_together(world):
    """One of the calls made together finds no capacity: the others' instances are recorded,
    the batch moves zone with the cluster (a starting cluster moves whole), nothing orphaned."""
    refused = no_workers_in_zone_a(world, times=1)
    cid = world.create("c", 400)
    world.settle()
    assert refused and world.cluster(cid)["state"] == "running"
    assert world.cluster(cid)["ready"] == 401
    assert len(world.fake.live()) == 401 and world.orphans() == set()
