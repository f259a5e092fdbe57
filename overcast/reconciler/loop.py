"""The reconciler: a thread that runs level-triggered passes over all unfinished clusters."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import select

from overcast.reconciler.backend import BackendMachine
from overcast.reconciler.clusters import ClusterMachine
from overcast.reconciler.contexts import ContextFactory
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
                 busy_interval: float = 0.25) -> None:
        self.db = db
        self.contexts = ContextFactory()
        self.infra = InfraCache()
        self.machine = ClusterMachine(self.contexts, self.infra, control_plane, Timeouts())
        self.sweeper = Sweeper(db, self.contexts)
        self.backends = BackendMachine(self.contexts, self.infra)
        self.idle_interval, self.busy_interval = idle_interval, busy_interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="overcast-reconciler",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            busy = False
            try:
                busy = self.run_pass()
                self.sweeper.maybe_sweep()
            except Exception:  # one bad pass must not end the loop; the next one retries
                log.exception("reconciler pass failed")
            self._wake.wait(self.busy_interval if busy else self.idle_interval)

    def run_pass(self) -> bool:
        """One step for every unfinished cluster; True if any is still on its way."""
        with self.db.session() as session:
            ids = session.scalars(select(Cluster.id).where(Cluster.state.in_(ACTIVE))).all()
        busy = self.backends.run_pass(self.db)  # customer accounts being set up / torn down
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
