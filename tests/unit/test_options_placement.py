"""Placement: instance types against EC2 (moto), zone failover, spot replacement, scale-remove."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from overcast.backends import provider_for
from overcast.backends.base import CapacityError, ProviderError
from overcast.options import resolve
from overcast.reconciler import placement
from overcast.reconciler.placement import PlacementError, Zones, check_instance_types
from overcast.store.models import Cluster, Instance

pytestmark = pytest.mark.timeout(60)
ZONES = ["us-east-1a", "us-east-1b", "us-east-1c"]


@pytest.fixture
def target(ctx):
    return SimpleNamespace(ctx=ctx)


def test_unknown_instance_type_is_named(target):
    with pytest.raises(ProviderError, match="Unknown instance type.*m6i.huge"):
        check_instance_types(provider_for("aws"), target,
                             resolve(None, worker_vm_types=["m6i.huge"]))


def test_ec2_gpu_counts_apply_the_one_gpu_rule(target):
    # g4dn.12xlarge is in the static table too; pretend it is not, to exercise EC2's answer.
    opts = resolve(None)
    opts.worker_vm_types = ["g4dn.12xlarge"]
    with pytest.raises(PlacementError, match="g4dn.12xlarge has 4 GPUs: workers get one GPU"):
        check_instance_types(provider_for("aws"), target, opts)
    opts.worker_vm_types = ["g4dn.xlarge"]
    assert check_instance_types(provider_for("aws"), target, opts).worker_gpu == 1
    with pytest.raises(PlacementError, match="m6i.xlarge has no GPU"):
        check_instance_types(provider_for("aws"), target, resolve(None, worker_gpu=1,
                                             worker_vm_types=["m6i.xlarge"]))


class FakeSession:
    def add(self, row):
        pass

    def commit(self):
        pass


def make_cluster(state: str = "starting") -> Cluster:
    cluster = Cluster(id=7, name="c", account_id=1, region="us-east-1", zone="us-east-1a",
                      state=state, options={})
    cluster.account = SimpleNamespace(slug="alice")
    cluster.instances = [
        Instance(id=1, role="scheduler", aws_id="i-1", instance_type="m6i.large",
                 zone="us-east-1a", state="booting"),
        Instance(id=2, role="worker", aws_id=None, instance_type="m6i.xlarge",
                 zone="us-east-1a", state="requested"),
    ]
    return cluster


@pytest.fixture
def zones(monkeypatch):
    monkeypatch.setattr(placement, "notify", lambda *a, **k: notes.append(a[3]))
    notes: list[str] = []
    infra = SimpleNamespace(ensure=lambda *a: None,
                            provider=SimpleNamespace(zones=lambda ctx: list(ZONES)))
    z = Zones(infra)
    z.notes = notes
    return z


def capacity(zone: str) -> CapacityError:
    return CapacityError("no capacity", zone, code="InsufficientInstanceCapacity")


def test_failover_moves_a_starting_cluster_to_the_next_zone(zones):
    cluster = make_cluster()
    target = SimpleNamespace(ctx=SimpleNamespace(region="us-east-1"))
    worker = cluster.instances[1]
    leaving = zones.fail_over(FakeSession(), cluster, target, resolve(None), worker,
                              capacity("us-east-1a"))
    assert leaving == ["i-1"] and cluster.zone == "us-east-1b"
    assert cluster.instances[0].state == "terminated" and worker.zone == "us-east-1b"
    assert zones.notes == ["No capacity in us-east-1a for m6i.xlarge "
                           "(InsufficientInstanceCapacity); Launching the cluster in "
                           "us-east-1b instead"]
    zones.fail_over(FakeSession(), cluster, target, resolve(None), worker, capacity("us-east-1b"))
    assert cluster.zone == "us-east-1c"
    with pytest.raises(PlacementError, match="No zone of us-east-1 has capacity"):
        zones.fail_over(FakeSession(), cluster, target, resolve(None), worker,
                        capacity("us-east-1c"))


def test_failover_of_a_running_cluster_moves_only_the_worker(zones):
    cluster = make_cluster("running")
    target = SimpleNamespace(ctx=SimpleNamespace(region="us-east-1"))
    worker = cluster.instances[1]
    assert zones.fail_over(FakeSession(), cluster, target, resolve(None), worker,
                           capacity("us-east-1a")) == []
    assert cluster.zone == "us-east-1a" and worker.zone == "us-east-1b"


def test_pinned_zone_does_not_fail_over(zones):
    cluster = make_cluster()
    target = SimpleNamespace(ctx=SimpleNamespace(region="us-east-1"))
    with pytest.raises(PlacementError, match="Zone us-east-1a was pinned"):
        zones.fail_over(FakeSession(), cluster, target, resolve({"zone": "us-east-1a"}),
                        cluster.instances[1], capacity("us-east-1a"))


def test_interrupted_spot_workers_are_replaced_on_demand_only_with_fallback():
    cluster = make_cluster("running")
    cluster.instances[1].spot, cluster.instances[1].state = True, "ready"
    cluster.instances.append(Instance(role="worker", spot=True, state="terminated",
                                      reason=placement.SPOT_INTERRUPTED))
    assert placement.worker_is_spot(cluster, resolve({"spot": True})) is True
    fallback = resolve({"spot": True, "spot_on_demand_fallback": True})
    assert placement.worker_is_spot(cluster, fallback) is False
    cluster.instances.append(Instance(role="worker", spot=False, state="booting"))
    assert placement.worker_is_spot(cluster, fallback) is True  # the debt is paid
    assert placement.worker_is_spot(cluster, resolve(None)) is False


def test_scale_remove_marks_exactly_those_workers(tmp_path, monkeypatch):
    from overcast.server.app import create_app
    from overcast.server.bootstrap import ensure_first_user
    from overcast.store.db import Database

    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    db = Database(f"sqlite:///{tmp_path / 'overcast.db'}")
    slug, token = ensure_first_user("alice", db)
    client = TestClient(create_app(db, run_reconciler=False))
    headers = {"Authorization": f"Bearer {token}"}
    assert client.post(f"/api/v1/accounts/{slug}/clusters", headers=headers,
                       json={"name": "c", "n_workers": 3}).status_code == 201
    with db.session() as s:
        cluster = s.query(Cluster).one()
        for k, state in enumerate(["ready", "ready", "failed"]):
            s.add(Instance(cluster_id=cluster.id, role="worker", aws_id=f"i-{k}",
                           instance_type="m6i.xlarge", state=state))
    done = client.post(f"/api/v1/accounts/{slug}/clusters/c/scale", headers=headers,
                       json={"n_workers": 1, "remove": ["i-1", "i-2", "i-elsewhere"]}).json()
    states = {i["aws_id"]: (i["state"], i["desired_state"]) for i in done["instances"]}
    assert done["n_workers"] == 1
    assert states == {"i-0": ("ready", "running"), "i-1": ("ready", "stopped"),
                      "i-2": ("failed", "stopped")}
