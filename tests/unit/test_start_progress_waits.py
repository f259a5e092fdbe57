"""The start's live view names what a cluster waits for: a first VM image build in its region,
or its software environment's image, instead of "scheduler requested" for minutes."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import delete

from overcast.client.progress import StartProgress
from overcast.store.models import Cluster, Image, SoftwareEnvironment

pytestmark = pytest.mark.timeout(60)


def plain_progress(world, name: str) -> str:
    doc = world.api.get(f"/api/v1/accounts/{world.slug}/clusters/{name}",
                        headers=world.headers).json()
    out = io.StringIO()
    with StartProgress(name, world.slug, mode="plain", stream=out) as progress:
        progress.update(doc)
    return out.getvalue()


def test_a_cluster_waiting_for_the_first_vm_image_says_so(world):
    with world.db.session() as s:
        s.execute(delete(Image))  # a fresh region: no overcast image yet
        s.commit()
    cid = world.create("first", 2)
    for _ in range(3):  # waiting passes: one notification row, with a count
        world.reconciler._step(cid)
    line = plain_progress(world, "first")
    assert "Waiting for the overcast VM image" in line and "us-east-1" in line
    assert "scheduler requested" in line  # nothing launched while it waits
    waits = [n for n in world.notifications(cid) if n.event_type == "waiting-vm-image"]
    assert len(waits) == 1 and waits[0].count >= 2


def test_a_cluster_waiting_for_its_environment_image_names_it(world):
    cid = world.create("env", 1)
    with world.db.session() as s:
        cluster = s.get(Cluster, cid)
        cluster.options = {**cluster.options, "software": {
            "name": "team-env", "version": 3, "lock_hash": "a" * 64}}
        s.add(SoftwareEnvironment(account_id=cluster.account_id, name="team-env", version=3,
                                  lock_hash="a" * 64, build_state="building",
                                  spec={"kind": "pip"}))
        s.commit()
    world.reconciler._step(cid)
    line = plain_progress(world, "env")
    assert "software environment team-env v3" in line


def test_a_running_cluster_shows_no_stale_wait(world):
    cid = world.create("ok", 1)
    world.settle()
    assert world.cluster(cid)["state"] == "running"
    line = plain_progress(world, "ok")
    assert "Waiting" not in line and "running" in line
