"""An environment image deleted from the registry is built again by a *new* builder: EC2 keeps
listing a terminated instance for about an hour, and a rebuild that reused the first attempt's
ClientToken found that builder again (and its old console's "done") instead of launching one.
In-process moto; the VM image is built through the real image pipeline first."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from overcast.reconciler.contexts import ContextFactory
from overcast.reconciler.envbuilds import (
    EnvBuildMachine,
    WaitingForEnvironment,
    build_region,
    cluster_software,
)
from overcast.reconciler.infra import InfraCache
from overcast.store.models import SoftwareEnvironment
from tests.unit import test_image_pipeline as pipeline
from tests.unit.backend_fixtures import account

pytestmark = pytest.mark.timeout(120)
world = pipeline.world  # the image pipeline's fixture: in-process moto, a database, the API
SPEC = {"kind": "package_sync", "python": "3.11",
        "packages": [{"name": "six", "version": "1.16.0"}]}


def _env(world) -> SoftwareEnvironment:
    with world["db"].session() as session:
        row = session.scalar(select(SoftwareEnvironment).order_by(SoftwareEnvironment.id))
        session.expunge(row)
        return row


def _step(world, machine: EnvBuildMachine, lock_hash: str) -> None:
    with world["db"].session() as session:
        machine.step(session, account(session, world["slug"]).id, lock_hash)


def _builders(world) -> dict[str, str]:
    """{instance id: state} of every environment builder EC2 lists (terminated included)."""
    found = world["ec2"].describe_instances(Filters=[
        {"Name": "tag:overcast:role", "Values": ["env-builder"]}])
    return {i["InstanceId"]: i["State"]["Name"]
            for r in found["Reservations"] for i in r["Instances"]}


def test_an_image_gone_from_the_registry_gets_a_new_builder(world):
    pipeline._build(world)  # the overcast VM image the builder boots from
    created = world["api"].post(f"/api/v1/accounts/{world['slug']}/software-environments",
                                json={"name": "ml", "spec": SPEC})
    assert created.status_code == 201, created.text
    # A second environment of the same packages: one image, one build, for both rows.
    world["api"].post(f"/api/v1/accounts/{world['slug']}/software-environments",
                      json={"name": "ml-copy", "spec": SPEC}).raise_for_status()
    machine = EnvBuildMachine(ContextFactory(), InfraCache(), poll_interval=0)
    lock_hash = created.json()["lock_hash"]
    _step(world, machine, lock_hash)
    first = _env(world)
    assert first.build_state == "building" and first.builder_token
    (old_builder,) = _builders(world)
    # The build finished (as the console's "done" makes it) and its builder was terminated.
    world["ec2"].terminate_instances(InstanceIds=[old_builder])
    with world["db"].session() as session:
        for row in session.scalars(select(SoftwareEnvironment)):
            row.build_state, row.image_uri = "ready", f"registry.example/ml:{lock_hash}"
            row.created_at -= timedelta(hours=2)  # made long before the image went missing
        session.commit()

    # A cluster's first launch finds the image gone from the (empty) registry: built again.
    with world["db"].session() as session:
        acct = account(session, world["slug"])
        target = ContextFactory().for_account(session, acct, build_region(session, acct))
        with pytest.raises(WaitingForEnvironment):
            cluster_software(session, acct, {"lock_hash": lock_hash, "name": "ml",
                                             "version": 1}, target)
    assert _env(world).build_state == "pending"
    _step(world, machine, lock_hash)
    _step(world, machine, lock_hash)  # follows the new builder: its time counts from now

    again = _env(world)
    builders = _builders(world)
    assert len(builders) == 2 and builders[old_builder] == "terminated"
    (new_builder,) = set(builders) - {old_builder}
    assert builders[new_builder] in ("pending", "running")
    assert again.build_state == "building" and new_builder in again.reason
    assert again.builder_token != first.builder_token
