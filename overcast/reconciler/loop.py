"""The reconciler: a thread that runs level-triggered passes over all unfinished clusters."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import select

from overcast.reconciler.backend import BackendMachine
from overcast.reconciler.clusters import ClusterMachine
from overcast.reconciler.contexts import ContextFactory
from overcast.reconciler.images import ImageMachine
from overcast.reconciler.infra import InfraCache
from overcast.reconciler.sweeper import Sweeper
from overcast.reconciler.timeouts import Timeouts
from overcast.store.db import Database
from overcast.store.models import Cluster

log = logging.getLogger("overcast.reconciler")
ACTIVE = ("pending", "starting", "running", "stopping")
BUSY = ("pending", "starting", "stopping")


class Reconciler:
    def __init__(self, db: Database, control_plane: str, *, idle_interval: float = 2.0,
                 busy_interval: float = 0.25, control_plane_ca: str | None = None) -> None:
        self.db = db
        self.contexts = ContextFactory()
        self.infra = InfraCache()
        self.machine = ClusterMachine(self.contexts, self.infra, control_plane, Timeouts(),
                                      control_plane_ca)
        self.images = ImageMachine(self.contexts, self.infra, control_plane, control_plane_ca)
        self.sweeper = Sweeper(db, self.contexts)
        self.backends = BackendMachine(self.contexts, self.infra)
        self.idle_interval, self.busy_interval = idle_interval, busy_interval
        self._stop = threading.Event()
        # Two loops: setting up a customer's account can wait minutes on AWS (NAT gateway),
        # and must not hold up the steps of running clusters meanwhile.
        self._loops = {"clusters": (self._cluster_pass, threading.Event()),
                       "backends": (self._backend_pass, threading.Event())}
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for name, (one_pass, wake) in self._loops.items():
            thread = threading.Thread(target=self._run, args=(one_pass, wake),
                                      name=f"overcast-reconciler-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self.wake()
        for thread in self._threads:
            thread.join(timeout=10)

    def wake(self) -> None:
        for _, wake in self._loops.values():
            wake.set()

    def _run(self, one_pass, wake: threading.Event) -> None:
        while not self._stop.is_set():
            wake.clear()
            busy = False
            try:
                busy = one_pass()
            except Exception:  # one bad pass must not end the loop; the next one retries
                log.exception("reconciler pass failed")
            wake.wait(self.busy_interval if busy else self.idle_interval)

    def _cluster_pass(self) -> bool:
        busy = self.run_pass()
        self.sweeper.maybe_sweep()
        return busy

    def _backend_pass(self) -> bool:
        """Customer accounts being set up or torn down, and VM image builds; True if any."""
        busy = self.backends.run_pass(self.db)
        return self.images.run_pass(self.db) or busy

    def run_pass(self) -> bool:
        """One step for every unfinished cluster; True if any is still on its way."""
        with self.db.session() as session:
            ids = session.scalars(select(Cluster.id).where(Cluster.state.in_(ACTIVE))).all()
        busy = False
        for cluster_id in ids:
            busy |= self._step(cluster_id)
        return busy

    def _step(self, cluster_id: int) -> bool:
        started = time.monotonic()
        with self.db.session() as session:
            cluster = session.get(Cluster, cluster_id)
            self.machine.step(session, cluster)
            state = cluster.state
            waiting = any(i.state != "ready" for i in cluster.instances
                          if i.state in ("requested", "launched", "booting"))
        log.debug("cluster %s -> %s in %.3f s", cluster_id, state, time.monotonic() - started)
        return state in BUSY or waiting
