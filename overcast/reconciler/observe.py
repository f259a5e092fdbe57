"""One look at AWS per account and region for clusters that just run.

A running cluster with nothing on its way used to cost one DescribeInstances per pass (every
2 s: 30 calls per cluster per minute; EC2 throttles an account's describes at about 20 calls/s).
Here the settled running clusters of an account share one paginated DescribeInstances of all
the account's live instances, made again after `RESYNC` seconds or as soon as the reconciler
is woken (a request, an agent's ready/failed report). Clusters that start, scale or stop keep
their own per-cluster look: they need every change at once, terminated instances included.

A snapshot that lacks an instance the database has live (terminated: by AWS, spot, a person)
is no verdict: that cluster is looked at on its own, with terminated instances, so a spot
interruption is still told from a failure.

The per-cluster look of a cluster on its way is made again at most every `BUSY_LOOK` seconds
(instances it launches are added to it at once): passes run every 0.25 s while a cluster
starts, and each agent's report wakes one, so a look per pass would cost thousands of
describes for a large cluster. It is made at once when a row waits on a batch whose answer
was not recorded (batches.py), or a row has an instance the last look did not have. Once
every live instance has reported ready, it is made again only after `RESYNC` seconds. A large
cluster's look is made less often (`busy_look`): describing 1,000 instances is ten pages
(seconds), during which the step applies no agent report.
"""

from __future__ import annotations

import os
import threading

from overcast import clock, tags
from overcast.backends.base import InstanceInfo
from overcast.reconciler import batches
from overcast.reconciler.contexts import Target
from overcast.store.models import Cluster

RESYNC = float(os.environ.get("OVERCAST_RESYNC_SECONDS", 30.0))
BUSY_LOOK = float(os.environ.get("OVERCAST_BUSY_LOOK_SECONDS", 5.0))
SETTLED = ("ready", "terminated", "failed")
LIVE = ("requested", "launched", "booting", "ready")


def busy_look(instances: int) -> float:
    """Seconds between looks of a cluster on its way: BUSY_LOOK, or 1 s per 100 instances."""
    return max(BUSY_LOOK, instances / 100)


class AccountView:
    def __init__(self, provider) -> None:
        self.provider = provider
        self.generation = 0  # bumped by wake(): every snapshot is stale at once
        self._snapshots: dict[tuple, tuple[float, int, dict[str, dict[str, InstanceInfo]]]] = {}
        self._locks: dict[tuple, threading.Lock] = {}
        self._lock = threading.Lock()
        # cluster id -> (when, what its own look saw + what it launched since)
        self._looks: dict[int, tuple[float, dict[str, InstanceInfo]]] = {}

    def invalidate(self) -> None:
        self.generation += 1

    def instances(self, target: Target, cluster: Cluster) -> dict[str, InstanceInfo]:
        """What AWS has for this cluster (aws id -> info)."""
        if self._settled(cluster):
            seen = self._snapshot(target, cluster.account.slug).get(str(cluster.id), {})
            live = {r.aws_id for r in cluster.instances if r.aws_id and r.state == "ready"}
            if live <= seen.keys():
                return seen
        return self._cluster_look(target, cluster)

    def note_launched(self, cluster_id: int, infos: list[InstanceInfo]) -> None:
        """Instances just launched belong to the cluster's current look (none is missing).
        The look's age counts from this launch: a look now would find them just as pending,
        and a cluster's ten batches (seconds) would otherwise end in a look of 1,000 at once."""
        with self._lock:
            look = self._looks.get(cluster_id)
            if look is not None:
                look[1].update({i.aws_id: i for i in infos})
                self._looks[cluster_id] = (clock.monotonic(), look[1])

    def forget(self, cluster_id: int) -> None:
        with self._lock:
            self._looks.pop(cluster_id, None)

    def _cluster_look(self, target: Target, cluster: Cluster) -> dict[str, InstanceInfo]:
        with self._lock:
            made, seen = self._looks.get(cluster.id, (-1e18, {}))
        live = {r.aws_id for r in cluster.instances if r.aws_id and r.state in LIVE}
        # Every live instance's agent has reported ready (it runs): nothing is on its way in
        # AWS, and a new look (seconds for 1,000 instances) would only hold up the step that
        # applies the last reports. Such a look is as good as a settled cluster's (RESYNC).
        up = all(r.state == "ready" for r in cluster.instances if r.aws_id in live)
        age = clock.monotonic() - made
        fresh = age < busy_look(len(live)) or (up and age < RESYNC)
        if fresh and live <= seen.keys() and not batches.needs_look(cluster):
            return dict(seen)
        started = clock.monotonic()
        seen = {i.aws_id: i for i in self.provider.list_instances(
            target.ctx, cluster_id=cluster.id, include_terminated=True)}
        with self._lock:
            self._looks[cluster.id] = (started, seen)
        return dict(seen)

    @staticmethod
    def _settled(cluster: Cluster) -> bool:
        return cluster.state == "running" and cluster.desired_state != "stopped" and \
            all(r.state in SETTLED and r.desired_state != "stopped" for r in cluster.instances)

    def _snapshot(self, target: Target, slug: str) -> dict[str, dict[str, InstanceInfo]]:
        key = (id(target.ctx), slug)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one DescribeInstances per account and region, whoever asks meanwhile
            made, generation, by_cluster = self._snapshots.get(key, (0.0, -1, {}))
            if generation == self.generation and clock.monotonic() - made < RESYNC:
                return by_cluster
            generation, started = self.generation, clock.monotonic()
            by_cluster = {}
            for info in self.provider.list_instances(target.ctx, account=slug):
                cluster_id = info.tags.get(tags.CLUSTER, "")
                by_cluster.setdefault(cluster_id, {})[info.aws_id] = info
            self._snapshots[key] = (started, generation, by_cluster)
            return by_cluster
