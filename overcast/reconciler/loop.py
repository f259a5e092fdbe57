"""The reconciler: level-triggered passes over all unfinished clusters and backend set-ups.

Isolation: each cluster's step runs in a small worker pool, so a step that waits on the cloud
holds up no other cluster (the pass does not wait for it; the next pass skips it while it is in
flight). Any exception of one step, not only a cloud error, ends that step only. A cluster whose
step failed is retried with exponential backoff and jitter (backoff.py), so a cloud outage
costs a few calls per cluster per minute, not four per second.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait

from sqlalchemy import select

from overcast.backends import Provider
from overcast.reconciler.backend import BackendMachine
from overcast.reconciler.backoff import Backoff
from overcast.reconciler.clusters import ClusterMachine
from overcast.reconciler.contexts import ContextFactory
from overcast.reconciler.envbuilds import EnvBuildMachine
from overcast.reconciler.images import ImageMachine
from overcast.reconciler.infra import InfraCache
from overcast.reconciler.leader import RETRY_SECONDS, Leadership
from overcast.reconciler.liveness import Liveness
from overcast.reconciler.sweeper import Sweeper
from overcast.reconciler.timeouts import Timeouts
from overcast.reconciler.unexpected import Unexpected
from overcast.store.db import Database
from overcast.store.models import Cluster

log = logging.getLogger("overcast.reconciler")
ACTIVE = ("pending", "starting", "running", "stopping")
BUSY = ("pending", "starting", "stopping")
STEP_WORKERS = 4


class Reconciler:
    def __init__(self, db: Database, control_plane: str, *, idle_interval: float = 2.0,
                 busy_interval: float = 0.25, provider: Provider | None = None,
                 step_wait: float | None = 5.0, control_plane_ca: str | None = None) -> None:
        self.db = db
        self.contexts = ContextFactory(provider)
        self.infra = InfraCache(self.contexts.provider)
        self.liveness = Liveness(db)
        self.machine = ClusterMachine(self.contexts, self.infra, control_plane,
                                      Timeouts(liveness=self.liveness), control_plane_ca)
        # VM image builds (reconciler/images.py), stepped in the backend thread.
        self.images = ImageMachine(self.contexts, self.infra, control_plane, control_plane_ca)
        # Software environment image builds (reconciler/envbuilds.py), likewise.
        self.envs = EnvBuildMachine(self.contexts, self.infra)
        self.backoff = Backoff(base=1.0, cap=120.0)
        self.unexpected = Unexpected(db, self.machine)
        self.sweeper = Sweeper(db, self.contexts)
        self.backends = BackendMachine(self.contexts, self.infra)
        self.leadership = Leadership(db.engine)  # replicas on one database: one reconciles
        self.idle_interval, self.busy_interval = idle_interval, busy_interval
        self.step_wait = step_wait  # how long a pass waits for its steps (None: all of them)
        self._pool = ThreadPoolExecutor(STEP_WORKERS, thread_name_prefix="overcast-step")
        self._in_flight: dict[int, Future] = {}
        self._stop = threading.Event()
        # Two loops: setting up a customer's account can wait minutes on AWS (NAT gateway),
        # and must not hold up the steps of running clusters meanwhile.
        self._loops = {"clusters": (self._cluster_pass, threading.Event()),
                       "backends": (self._backend_pass, threading.Event())}
        self._soon = threading.Event()  # a soft wake: wake(at_once=False)
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        # The cloud's API models parsed now, not during the first requests' steps.
        threading.Thread(target=self._warm_up, name="overcast-warm-up", daemon=True).start()
        try:  # before the first pass: a restart's gap must be known before any heartbeat check
            self.liveness.mark()
        except Exception:
            log.exception("could not mark the control plane alive")
        marker = threading.Thread(target=self.liveness.run, args=(self._stop,),
                                  name="overcast-alive-mark", daemon=True)
        marker.start()
        self._threads.append(marker)
        elector = threading.Thread(target=self._elect, name="overcast-leader-election",
                                   daemon=True)
        elector.start()
        self._threads.append(elector)
        for name, (one_pass, wake) in self._loops.items():
            thread = threading.Thread(target=self._run, args=(one_pass, wake),
                                      name=f"overcast-reconciler-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _warm_up(self) -> None:
        try:
            self.contexts.provider.warm_up()
        except Exception:  # only an optimisation: the first calls load what they need
            log.exception("warming up the cloud provider failed")

    def stop(self) -> None:
        self._stop.set()
        self.wake()
        for thread in self._threads:
            thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.leadership.release()

    def wake(self, look: bool = True, at_once: bool = True) -> None:
        """A pass now; `look`: something changed in AWS (a request), look again. `at_once=False`
        (a worker's report): a pass within `busy_interval`, so a thousand reports make a pass
        every busy_interval rather than a thousand passes (each loads the instance rows)."""
        if not at_once:
            self._soon.set()
            return
        if look:
            self.machine.view.invalidate()
        for _, wake in self._loops.values():
            wake.set()

    def _elect(self) -> None:
        """Followers try for the lock every RETRY_SECONDS; a new leader starts at once."""
        while not self._stop.is_set():
            if not self.leadership.is_leader and self.leadership.try_acquire():
                self.wake()
            self._stop.wait(RETRY_SECONDS)

    def _run(self, one_pass, wake: threading.Event) -> None:
        while not self._stop.is_set():
            wake.clear()
            if one_pass == self._cluster_pass:
                self._soon.clear()
            if not self.leadership.still_leader():  # fencing: re-checked before every pass
                wake.wait(RETRY_SECONDS)
                continue
            busy = False
            try:
                busy = one_pass()
            except Exception:  # one bad pass must not end the loop; the next one retries
                log.exception("reconciler pass failed")
            self._pause(wake, self.busy_interval if busy else self.idle_interval)

    def _pause(self, wake: threading.Event, interval: float) -> None:
        """Until `interval` has passed or a wake; a soft wake ends it once `busy_interval`
        has passed."""
        start = time.monotonic()
        while not wake.is_set() and not self._stop.is_set():
            waited = time.monotonic() - start
            if waited >= interval or (self._soon.is_set() and waited >= self.busy_interval):
                return
            wake.wait(min(interval - waited, self.busy_interval))

    def _cluster_pass(self) -> bool:
        return self.run_pass()

    def _backend_pass(self) -> bool:
        """Customer accounts being set up or torn down, VM image builds, and the sweep of
        leftovers; True if any is on its way. The sweep is here, not in the clusters' loop:
        its account-wide DescribeInstances (seconds with 1,000 instances) held up every
        cluster's pass, and with it agents' ready reports."""
        busy = self.backends.run_pass(self.db)
        busy = self.images.run_pass(self.db) or busy
        busy = self.envs.run_pass(self.db) or busy
        try:
            self.sweeper.maybe_sweep()
        except Exception:
            log.exception("sweep failed")
        return busy

    def run_pass(self) -> bool:
        """One step for every unfinished cluster not backing off; True if any is on its way."""
        self.liveness.maybe_mark()
        with self.db.session() as session:
            rows = session.execute(select(Cluster.id, Cluster.state, Cluster.desired_state)
                                   .where(Cluster.state.in_(ACTIVE))).all()
        self._in_flight = {k: f for k, f in self._in_flight.items() if not f.done()}
        started: list[Future] = []
        for cluster_id, state, desired in rows:
            if cluster_id in self._in_flight:
                continue
            # A stop the user asked for is acted on at once, backoff or not.
            asked_to_stop = desired == "stopped" and state != "stopping"
            if not (asked_to_stop or self.backoff.ready(cluster_id)):
                continue
            future = self._pool.submit(self._step, cluster_id)
            self._in_flight[cluster_id] = future
            started.append(future)
        done, _ = wait(started, timeout=self.step_wait)
        busy = bool(self._in_flight) and len(done) < len(started)
        for future in done:
            busy |= future.result()
        return busy or any(state in BUSY for _, state, _ in rows)

    def _step(self, cluster_id: int) -> bool:
        """One cluster's step, in a pool thread; never raises. True if still on its way."""
        started = time.monotonic()
        try:
            with self.db.session() as session:
                cluster = session.get(Cluster, cluster_id)
                ok = self.machine.step(session, cluster)
                state = cluster.state
                waiting = any(i.state in ("requested", "launched", "booting")
                              for i in cluster.instances)
        except Exception as exc:  # a bug or an unknown failure: this cluster only
            log.exception("cluster %s: step failed", cluster_id)
            self.backoff.failed(cluster_id)
            self.unexpected.record(cluster_id, exc, self.backoff.failures(cluster_id))
            return True
        if ok:
            self.backoff.succeeded(cluster_id)
        else:
            delay = self.backoff.failed(cluster_id)
            log.info("cluster %s: cloud error, next try in %.1f s", cluster_id, delay)
        log.debug("cluster %s -> %s in %.3f s", cluster_id, state, time.monotonic() - started)
        return state in BUSY or waiting
