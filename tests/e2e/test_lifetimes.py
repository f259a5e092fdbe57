"""Lifetimes end to end: idle and no-client timeouts stop a cluster by themselves; adapt
scales the workers up under load and back down, retiring exactly the workers it chose."""

from __future__ import annotations

import time

import pytest
from distributed import Client

import overcast
from tests.e2e.readback import cluster_info, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_idle_cluster_stops_itself_but_not_while_busy(overcast_config, stack):
    cluster = overcast.Cluster(name="idle", n_workers=1, idle_timeout="4s", progress=False,
                               shutdown_on_close=False)
    try:
        with Client(cluster) as client:
            started = time.monotonic()
            future = client.submit(time.sleep, 7)
            time.sleep(6)  # busy for longer than idle_timeout: still running
            assert cluster_info(stack, "idle")["state"] == "running"
            future.result()
            assert time.monotonic() - started >= 7
        info = wait_until(lambda: (c := cluster_info(stack, "idle"))["state"] == "stopped" and c,
                          30, "the idle cluster to stop")
        idle_for = time.monotonic() - started - 7
        assert 4 <= idle_for <= 15  # the scheduler's idle clock restarted after the task
        assert "idle_timeout" in info["reason"]
        stops = overcast.get_notifications(cluster="idle", event_type="idle-timeout", json=True)
        assert len(stops) == 1 and "without tasks (idle_timeout)" in stops[0]["message"]
    finally:
        cluster.close()


def test_cluster_without_a_client_stops_itself(overcast_config, stack):
    cluster = overcast.Cluster(name="lonely", n_workers=0, no_client_timeout="3s",
                               progress=False, shutdown_on_close=False)
    try:
        info = wait_until(lambda: (c := cluster_info(stack, "lonely"))["state"] == "stopped"
                          and c, 30, "the cluster without a client to stop")
        assert "no_client_timeout" in info["reason"]
        stops = overcast.get_notifications(cluster="lonely", event_type="no-client-timeout",
                                           json=True)
        assert len(stops) == 1 and "without a client" in stops[0]["message"]
    finally:
        cluster.close()


def test_adapt_scales_up_under_load_and_back_down(overcast_config, stack):
    with overcast.Cluster(name="adaptive", n_workers=1, progress=False) as cluster, \
            Client(cluster) as client:
        cluster.adapt(minimum=1, maximum=3, interval="500ms", wait_count=4)
        futures = client.map(lambda i: time.sleep(2) or i, range(24))
        most = wait_until(lambda: (n := len(client.scheduler_info()["workers"])) >= 2 and n,
                          60, "more workers under load")
        assert sum(client.gather(futures)) == sum(range(24))
        most = max(most, cluster_info(stack, "adaptive")["workers_ready"])
        assert 2 <= most <= 3
        wait_until(lambda: len(client.scheduler_info()["workers"]) == 1, 60,
                   "the workers to be retired")
        info = wait_until(lambda: (c := cluster_info(stack, "adaptive"))["n_workers"] == 1
                          and c["workers_ready"] == 1 and c, 30, "the control plane to agree")
        survivor = next(iter(client.scheduler_info()["workers"].values()))["name"]
        live = [i for i in info["instances"] if i["role"] == "worker" and i["state"] == "ready"]
        assert [i["aws_id"] for i in live] == [survivor]
        def retired_workers() -> list[dict]:
            return [i for i in cluster_info(stack, "adaptive")["instances"]
                    if i["role"] == "worker" and i["aws_id"] != survivor]

        # A retired worker passes through "stopping" on its way to "terminated".
        retired = wait_until(lambda: (r := retired_workers()) and all(
            i["state"] in ("terminated", "failed") for i in r) and r, 30, "retired workers gone")
        assert all(i["state"] == "terminated" for i in retired), \
            [(i["aws_id"], i["state"], i["reason"]) for i in retired]
