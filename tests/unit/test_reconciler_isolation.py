"""Isolation, backoff and notification counts of the reconciler, against the fake provider."""

from __future__ import annotations

import pytest

from overcast.reconciler.backoff import Backoff
from overcast.store.notify import notify
from tests.unit.fake_provider import ERRORS

pytestmark = pytest.mark.timeout(120)


def test_one_broken_cluster_of_five_delays_no_other(world):
    ids = [world.create(f"c{k}", 1) for k in range(5)]
    broken = ids[2]
    # An unexpected exception at every verb this cluster's steps call.
    world.fake.inject("*", ERRORS["unexpected"], cluster=broken)
    world.run(20)
    for cid in ids:
        if cid != broken:
            assert world.cluster(cid)["state"] == "running"
    world.run(600)
    assert world.cluster(broken)["state"] == "error"
    rows = world.notifications(broken)
    assert len(rows) <= 8, [(n.event_type, n.message, n.count) for n in rows]
    errors = [n for n in rows if n.event_type == "reconciler-error"]
    assert len(errors) == 1 and errors[0].count >= 5
    assert "RuntimeError" in errors[0].message and "a bug" not in errors[0].message
    world.fake.clear()
    world.settle()
    assert world.orphans() == set()


def test_an_unreachable_cloud_costs_a_few_calls_and_one_row_per_cluster(world):
    ids = [world.create(f"c{k}", 1) for k in range(3)]
    world.settle()
    world.fake.inject("*", ERRORS["server"])
    world.scale("c0", 2)  # needs a launch, which fails
    calls = len(world.fake.calls)
    world.run(600)  # ten minutes of a cloud answering 500
    # Backoff: far fewer calls than passes (120 passes x 3 clusters); no cluster lost.
    assert len(world.fake.calls) - calls < 60
    assert all(world.cluster(c)["state"] == "running" for c in ids)
    retries = [n for n in world.notifications(ids[0]) if n.event_type == "aws-retry"]
    assert len(retries) == 1 and retries[0].count > 1
    world.fake.clear()
    world.settle()
    assert world.cluster(ids[0])["ready"] == 3


def test_a_user_stop_is_acted_on_during_backoff(world):
    cid = world.create("c", 1)
    world.settle()
    world.fake.inject("list_instances", ERRORS["server"], times=6)
    world.run(30)
    world.delete("c")
    # Desired state is the user's; observed state moves only when the reconciler acts.
    assert world.cluster(cid)["state"] == "running"
    world.settle()
    assert world.cluster(cid)["state"] == "stopped"


def test_repeated_notifications_are_one_row_with_a_count(world):
    from overcast.store.models import Account, Notification

    with world.db.session() as s:
        account = s.query(Account).one()
        for _ in range(3):
            notify(s, account.id, "aws-retry", "Waiting on AWS", level="warning")
        notify(s, account.id, "aws-retry", "Something else", level="warning")
        notify(s, account.id, "aws-retry", "Something else", level="warning")
        s.commit()
        rows = s.query(Notification).filter_by(event_type="aws-retry").order_by("id").all()
        assert [(r.message, r.count) for r in rows] == [("Waiting on AWS", 3),
                                                         ("Something else", 2)]
        assert rows[0].last_at is not None
    shown = world.api.get(f"/api/v1/accounts/{world.slug}/notifications?event_type=aws-retry",
                          headers=world.headers).json()
    assert [(n["message"], n["count"]) for n in shown] == [("Something else", 2),
                                                           ("Waiting on AWS", 3)]


def test_backoff_doubles_with_jitter_and_resets():
    now = [0.0]
    b = Backoff(base=1.0, cap=8.0, now=lambda: now[0], rand=lambda: 1.0)
    assert [b.failed("k") for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert not b.ready("k")
    now[0] = 8.0
    assert b.ready("k")
    b.succeeded("k")
    low = Backoff(base=4.0, cap=8.0, now=lambda: now[0], rand=lambda: 0.0)
    assert low.failed("x") == 2.0  # the jittered half


def test_an_agents_report_brings_the_next_pass_within_the_busy_interval(world):
    """wake(at_once=False), as a worker's ready report does: the loop's pause ends once
    busy_interval has passed, however long it was; a thousand reports are a pass per
    busy_interval, not a thousand passes. A request's wake ends the pause at once."""
    import threading
    import time

    loop = world.reconciler
    loop.busy_interval = 0.05
    wake = loop._loops["clusters"][1]  # the cluster loop's own event

    def pause() -> threading.Thread:
        t = threading.Thread(target=loop._pause, args=(wake, 60.0), daemon=True)
        t.start()
        return t

    waiting = pause()
    time.sleep(0.3)
    assert waiting.is_alive()  # an idle loop waits its interval
    loop.wake(look=False, at_once=False)
    waiting.join(10)
    assert not waiting.is_alive() and not wake.is_set()  # ended by the soft wake
    loop._soon.clear()
    waiting = pause()
    loop.wake()
    waiting.join(10)
    assert not waiting.is_alive() and wake.is_set()
