"""The fault matrix: each error class at each reconciler step, against the fake provider.

Two modes per cell. "brief": the fault hits the step's next 2 calls, then the cloud recovers;
brief_outcome() says where the cluster (or backend) must end. "lasting": the fault stays for
8 minutes of clock (the 5-minute start timeout plus the 2-minute backoff cap), then
clears. Always: no cluster stuck
(after the fault nothing is pending, starting or stopping; during it nothing pending or
starting outlives the start timeout), no orphan (every instance the cloud runs belongs to a
live row of an unfinished cluster), a running cluster survives (quota: a notification names
the quota to raise), and a repeated failure is a handful of notification rows, not one per
pass. docs/fault-matrix.md is this table, written by hand from STEPS and brief_outcome().
"""

from __future__ import annotations

import pytest

from overcast.store.models import Backend
from tests.unit.fake_provider import ERRORS
from tests.unit.reconciler_world import World

pytestmark = pytest.mark.timeout(120)
QUOTA = "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"
FATAL = ("permission", "credentials", "fatal")  # a starting cluster cannot go on


# --- the steps: bring the world to the step, then name the verbs the step calls ------------
def at_prepare(w: World) -> int:
    return w.create("c", 1)


def at_running(w: World) -> int:
    cid = w.create("c", 1)
    w.settle()
    assert w.cluster(cid)["state"] == "running"
    return cid


def at_scale(w: World) -> int:
    cid = at_running(w)
    w.scale("c", 2)
    return cid


def at_teardown(w: World) -> int:
    cid = at_running(w)
    w.delete("c")
    return cid


def at_backend(w: World) -> int:
    with w.db.session() as s:
        from sqlalchemy import select

        from overcast.store.models import Account
        account = s.scalar(select(Account).where(Account.slug == w.slug))
        s.add(Backend(account_id=account.id, kind="aws", region="us-east-1", state="pending"))
        s.commit()
    return 0


def at_sweep(w: World) -> int:
    cid = at_running(w)
    w.delete("c")
    w.settle()
    # A VM launched for the finished cluster after its teardown (a crash between a launch
    # and its commit): only the sweeper finds it.
    from overcast import tags as T
    from overcast.backends.base import LaunchSpec
    w.fake.launch(None, [LaunchSpec(
        role="worker", subnet_id="subnet-priv-a", security_group_id="sg", image_id="ami",
        instance_type="m6i.xlarge", instance_profile=None, user_data="{}", spot=False,
        tags=T.resource_tags(w.slug, cid), client_token="late")])
    w.reconciler.sweeper._last = -1e9  # the sweep is due
    return cid


STEPS = {
    "prepare": (at_prepare, ["instance_types", "set_up_account", "zones"]),
    "launch": (at_prepare, ["launch"]),
    "converge": (at_prepare, ["list_instances", "open_firewall"]),
    "scale": (at_scale, ["launch"]),
    "teardown": (at_teardown, ["list_instances", "terminate", "close_firewall"]),
    "backend setup": (at_backend, ["set_up_account"]),
    "sweeper": (at_sweep, ["list_instances", "terminate"]),
}


def brief_outcome(step: str, error: str) -> str:
    """Where a cluster (a backend for "backend setup") ends after a brief fault."""
    if step == "backend setup":
        return "error" if error in (*FATAL, "quota") else "ready"
    if step in ("prepare", "launch", "converge") and error in FATAL:
        return "error"  # the cluster cannot start as asked: it ends, saying why
    if step in ("teardown", "sweeper"):
        return "stopped"
    return "running"


def _state(w: World, step: str, cid: int) -> str:
    if step == "backend setup":
        with w.db.session() as s:
            from sqlalchemy import select
            return s.scalar(select(Backend.state))
    return w.cluster(cid)["state"]


def _inject(w: World, verbs: list[str], error: str, times: int | None) -> None:
    for verb in verbs:
        w.fake.inject(verb, ERRORS[error], times=times)


def _check_after(w: World, step: str, cid: int) -> None:
    assert w.orphans() == set(), "an instance runs that no unfinished cluster knows of"
    if step != "backend setup":
        c = w.cluster(cid)
        assert c["state"] in ("running", "stopped", "error"), c
        if c["state"] == "running":
            assert c["ready"] == c["n_workers"] + 1, c


@pytest.mark.parametrize("error", list(ERRORS))
@pytest.mark.parametrize("step", list(STEPS))
def test_brief_fault(world, step, error):
    setup, verbs = STEPS[step]
    cid = setup(world)
    _inject(world, verbs, error, times=2)
    world.settle()
    assert _state(world, step, cid) == brief_outcome(step, error), \
        [(n.event_type, n.message) for n in world.notifications()]
    _check_after(world, step, cid)


@pytest.mark.parametrize("error", list(ERRORS))
@pytest.mark.parametrize("step", list(STEPS))
def test_lasting_fault(world, step, error):
    setup, verbs = STEPS[step]
    cid = setup(world)
    before = len(world.notifications())
    _inject(world, verbs, error, times=None)
    world.run(480, pass_seconds=8)  # < the 10 s gap: the control plane stays "up"
    if step != "backend setup":
        state = world.cluster(cid)["state"]
        # Nothing waits to start for ever: it runs, or it ended saying why.
        assert state not in ("pending", "starting"), world.cluster(cid)
        if step == "scale":
            assert state == "running"  # a running cluster survives every error class
    # Minutes of a failing cloud: a handful of rows (repeats are counted, not added).
    assert len(world.notifications()) - before <= 12, \
        [(n.event_type, n.message, n.count) for n in world.notifications()]
    if step == "scale" and error == "quota":
        quota = [n for n in world.notifications(cid) if n.event_type == "quota-exceeded"]
        assert quota and QUOTA in quota[-1].message and "keeps" in quota[-1].message
    world.fake.clear()
    world.settle()
    _check_after(world, step, cid)
