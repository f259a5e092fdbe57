"""Liveness across control-plane outages: silence the control plane could not hear is never
held against an instance; a silent worker is confirmed dead before it is terminated."""

from __future__ import annotations

import pytest

from overcast import clock
from overcast.reconciler.loop import Reconciler

pytestmark = pytest.mark.timeout(120)


def _restart(world) -> None:
    """A new control plane process on the same database (the old one's memory is gone)."""
    world.reconciler.stop()
    world.reconciler = Reconciler(world.db, "http://127.0.0.1:9", provider=world.fake,
                                  step_wait=None)


@pytest.mark.parametrize("outage", [45, 300, 3600])
def test_a_control_plane_outage_is_not_held_against_instances(world, outage):
    cid = world.create("c", 2)
    world.settle()
    before = world.cluster(cid)["ids"]
    _restart(world)
    clock.advance(outage)  # down: no marks, no passes, no heartbeats heard
    world.reconciler.run_pass()  # the first pass, before any agent got through again
    world.reconciler.run_pass()
    world.run(60)
    after = world.cluster(cid)
    assert after["state"] == "running" and after["ids"] == before
    assert world.fake.live() == set(before)


def test_instances_that_really_went_silent_are_replaced(world):
    cid = world.create("c", 1)
    world.settle()
    scheduler_and_worker = world.cluster(cid)["ids"]
    worker = scheduler_and_worker[1]
    world.silent = frozenset({worker})
    world.scheduler_sees = 0  # the scheduler lost it too
    world.run(60)
    assert worker not in world.fake.live()
    world.silent, world.scheduler_sees = frozenset(), None
    world.settle()
    now = world.cluster(cid)
    assert now["state"] == "running" and worker not in now["ids"] and now["ready"] == 2


def test_a_silent_worker_the_scheduler_still_counts_is_kept(world):
    cid = world.create("c", 1)
    world.settle()
    worker = world.cluster(cid)["ids"][1]
    world.silent = frozenset({worker})  # its heartbeats are lost, the scheduler sees it
    world.run(120)
    assert worker in world.cluster(cid)["ids"] and worker in world.fake.live()
    notes = [n for n in world.notifications(cid) if n.event_type == "heartbeat-missing"]
    assert len(notes) == 1 and worker in notes[0].message
