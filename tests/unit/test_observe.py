"""One look at AWS per account for clusters that just run: idle running clusters share one
DescribeInstances per resync, and an instance that vanished is still noticed."""

from __future__ import annotations

import pytest

from overcast.reconciler.observe import RESYNC
from overcast.store.models import Instance

pytestmark = pytest.mark.timeout(120)


def test_idle_running_clusters_share_one_look_per_resync(world):
    ids = [world.create(f"c{k}", 1) for k in range(5)]
    world.settle()
    assert all(world.cluster(i)["state"] == "running" for i in ids)
    world.fake.calls.clear()
    world.run(120)  # 24 passes of 5 s: formerly 5 clusters x 24 passes = 120 looks
    looks = world.fake.calls.count("list_instances")
    # One per resync for the clusters, one per 30 s for the sweeper's leftover check.
    assert looks <= 2 * (120 / RESYNC + 1), looks


def test_a_vanished_instance_is_noticed_within_a_resync(world):
    cid = world.create("v", 1)
    world.settle()
    worker = next(i for i in world.fake.instances.values()
                  if i.info.role == "worker" and i.info.state == "running")
    world.fake.terminate(None, [worker.info.aws_id])  # as a person in the console would
    world.run(RESYNC + 10)
    with world.db.session() as s:
        row = s.query(Instance).filter_by(aws_id=worker.info.aws_id).one()
        assert row.state in ("failed", "terminated"), row.state
    world.settle()
    assert world.cluster(cid)["state"] == "running"
