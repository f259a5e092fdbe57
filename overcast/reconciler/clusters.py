"""The cluster state machine: one step towards the desired state per pass.

pending > starting > running > stopping > stopped | error. Every step reads AWS by tag first,
so a crash anywhere is repaired by the next pass.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from overcast import reachability
from overcast.backends.base import InstanceInfo, ProviderError, QuotaExceeded
from overcast.options import ClusterOptions
from overcast.reconciler import batches
from overcast.reconciler.console import with_console
from overcast.reconciler.contexts import ContextFactory, Target
from overcast.reconciler.health import AWS_GONE, LIVE, apply_reports, confirmed_dead
from overcast.reconciler.infra import InfraCache
from overcast.reconciler.launch import INSTANCE_ROW_TAG
from overcast.reconciler.launcher import BatchLauncher
from overcast.reconciler.observe import AccountView
from overcast.reconciler.placement import (
    SPOT_INTERRUPTED,
    PlacementError,
    Zones,
    check_instance_types,
    worker_is_spot,
)
from overcast.reconciler.quota import QuotaHold
from overcast.reconciler.timeouts import Timeouts
from overcast.store.models import Cluster, Instance, utcnow
from overcast.store.notify import notify

log = logging.getLogger("overcast.reconciler")


class ClusterMachine:
    def __init__(self, contexts: ContextFactory, infra: InfraCache, control_plane: str,
                 timeouts: Timeouts, control_plane_ca: str | None = None) -> None:
        self.contexts, self.infra = contexts, infra
        self.provider = contexts.provider
        self.control_plane, self.timeouts = control_plane, timeouts
        self.control_plane_ca = control_plane_ca
        self.zones = Zones(infra)
        self.quota = QuotaHold()
        self.view = AccountView(self.provider)  # one look per account for settled clusters
        self.launcher = BatchLauncher(self.provider, self.zones, self.quota, self.view,
                                      control_plane, control_plane_ca)

    def step(self, session: Session, cluster: Cluster) -> bool:
        """One step towards what the user asked. False: a cloud error to back off from."""
        try:
            # Inside the try: in role mode this assumes the customer's role, which can fail.
            target = self.contexts.for_account(session, cluster.account, cluster.region)
            self._follow_desired(session, cluster)
            if cluster.state == "pending":
                self._prepare(session, cluster, target)
            # No `elif`: a cluster that just became "starting" launches in this same pass.
            if cluster.state in ("starting", "running"):
                self._converge(session, cluster, target)
            elif cluster.state == "stopping":
                self._teardown(session, cluster, target)
            return True
        except PlacementError as exc:
            session.rollback()
            self.fail(session, cluster, str(exc))
            return True
        except ProviderError as exc:
            session.rollback()
            self._cloud_error(session, cluster, exc)
            return False

    def _cloud_error(self, session: Session, cluster: Cluster, exc: ProviderError) -> None:
        """Only an error that makes the cluster impossible ends it: a running cluster is kept
        (its VMs run; the next passes retry with backoff), a stopping one keeps stopping."""
        if cluster.state == "stopping" or exc.retryable or isinstance(exc, QuotaExceeded):
            notify(session, cluster.account_id, "aws-retry",
                   f"Waiting on AWS, will retry: {exc}", level="warning", cluster=cluster)
        elif cluster.state == "running":
            notify(session, cluster.account_id, "cloud-error",
                   f"{exc} The cluster keeps running; overcast retries with backoff.",
                   level="warning", cluster=cluster)
        else:
            self.fail(session, cluster, str(exc))
            return
        if cluster.state in ("pending", "starting") and self._overdue(cluster):
            self.fail(session, cluster, f"The cluster did not start within "
                      f"{self.timeouts.start:.0f} s; the last error: {exc}")
            return
        session.commit()

    def _follow_desired(self, session: Session, cluster: Cluster) -> None:
        """The user asked to stop (desired_state): the observed state follows."""
        if cluster.desired_state == "stopped" and cluster.state in ("pending", "starting",
                                                                    "running"):
            cluster.state = "stopping"
            session.commit()

    # --- pending: the account's standing resources and the cluster's zone -----------------
    def _prepare(self, session: Session, cluster: Cluster, target: Target) -> None:
        # VMs that could not reach the control plane would only time out: refuse at once.
        problem = reachability.refusal(self.control_plane, target.ctx)
        if problem:
            raise PlacementError(problem)
        # Instance types first: a bad one fails the cluster before anything is made for it.
        opts = check_instance_types(self.provider, target,
                                    ClusterOptions.from_dict(cluster.options))
        if opts.worker_gpu != cluster.options.get("worker_gpu"):
            cluster.options = {**cluster.options, "worker_gpu": opts.worker_gpu}
        infra = self.infra.ensure(session, cluster.account, target, cluster.region)
        zone = cluster.zone or self.zones.default_zone(target, infra)
        # A zone without overcast subnets gets them now (needs the setup permissions).
        self.infra.ensure(session, cluster.account, target, cluster.region, zone)
        cluster.zone = zone
        cluster.state, cluster.started_at = "starting", utcnow()
        notify(session, cluster.account_id, "cluster-starting",
               f"Starting in {zone} ({'hosted' if target.hosted else 'your AWS account'})",
               cluster=cluster)

    # --- starting/running: security group, instances, health, timeouts --------------------
    def _converge(self, session: Session, cluster: Cluster, target: Target) -> None:
        opts = ClusterOptions.from_dict(cluster.options)
        infra = self.infra.ensure(session, cluster.account, target, cluster.region, cluster.zone)
        if not cluster.security_group_id:
            cluster.security_group_id = self.provider.open_firewall(
                target.ctx, infra.network, cluster.account.slug, cluster.id,
                cluster.name, opts.firewall["ports"], opts.firewall["cidr"])
            notify(session, cluster.account_id, "security-group",
                   f"Security group {cluster.security_group_id}: tcp "
                   f"{', '.join(map(str, opts.firewall['ports']))} from {opts.firewall['cidr']}",
                   cluster=cluster)
            session.commit()
        actual = self._sync_instances(session, cluster, target)
        if self._check_health(session, cluster, target, actual):
            return
        self._ensure_counts(session, cluster, target, infra, opts)
        scheduler = next((i for i in cluster.instances
                          if i.role == "scheduler" and i.state == "ready"), None)
        if cluster.state == "starting" and scheduler and cluster.scheduler_address:
            cluster.state = "running"
            notify(session, cluster.account_id, "cluster-running",
                   f"Cluster running; scheduler at {cluster.scheduler_address}", cluster=cluster)
        elif cluster.state == "starting" and self._overdue(cluster):
            quota = self.quota.last.get(cluster.id)
            why = (f"the AWS quota \"{quota}\" is reached: raise it" if quota
                   else f"see `overcast cluster logs {cluster.name}`")
            self.fail(session, cluster, f"The cluster did not start within "
                      f"{self.timeouts.start:.0f} s; {why}.")
        elif cluster.state == "running":
            self.timeouts.check_lifetime(session, cluster, opts, self.stop)

    def _overdue(self, cluster: Cluster) -> bool:
        started = cluster.started_at or cluster.created_at
        return self.timeouts.up_since(started) > timedelta(seconds=self.timeouts.start)

    def _sync_instances(self, session: Session, cluster: Cluster,
                        target: Target) -> dict[str, InstanceInfo]:
        """Make the DB's instance rows agree with what AWS has for this cluster (and what
        its agents reported); returns what AWS has."""
        for row in apply_reports(cluster):  # the agent's reason, and what its VM printed
            row.reason = with_console(target, row.aws_id, row.reason or "")
        if session.dirty:  # reports count now, not after a look at AWS (seconds at 1,000)
            session.commit()
        # Terminated ones too (per-cluster look): their state reason tells a spot interruption
        # from a failure. Settled running clusters share the account's look (observe.py).
        actual = self.view.instances(target, cluster)
        by_aws = {r.aws_id: r for r in cluster.instances if r.aws_id}
        by_row = {str(r.id): r for r in cluster.instances}
        unrecorded = batches.Unrecorded(cluster)  # batches whose answer a crash lost
        for aws_id, info in actual.items():
            if aws_id in by_aws or info.state in AWS_GONE:
                continue
            row = unrecorded.take(info) or by_row.get(info.tags.get(INSTANCE_ROW_TAG, ""))
            if row is None or row.aws_id:
                row = Instance(cluster_id=cluster.id, role=info.role or "worker",
                               instance_type="unknown", state="launched")
                cluster.instances.append(row)
            row.aws_id, row.zone, row.subnet_id, row.spot = (aws_id, info.zone, info.subnet_id,
                                                             info.spot)
            if row.state == "requested":
                row.state = "launched"
            cluster.aws_account_id = cluster.aws_account_id or info.account
            notify(session, cluster.account_id, "instance-adopted",
                   f"Found {row.role} {aws_id} in AWS and adopted it", cluster=cluster)
        unrecorded.settle()
        for row in cluster.instances:
            if row.state not in LIVE or not row.aws_id:
                continue
            info = actual.get(row.aws_id)
            if info is not None and info.state in AWS_GONE and \
                    info.state_reason == self.provider.spot_interruption_reason:
                # Not a failure: AWS took the capacity back. _ensure_counts replaces it.
                row.state, row.reason = "terminated", SPOT_INTERRUPTED
                notify(session, cluster.account_id, "spot-interrupted",
                       f"Spot {row.role} {row.aws_id} was interrupted by AWS; replacing it",
                       level="warning", cluster=cluster)
            elif (info is None or info.state in AWS_GONE) and row.desired_state == "stopped":
                row.state, row.reason = "terminated", "scaled down"  # removed, as asked
            elif info is None or info.state in AWS_GONE:
                row.state, row.reason = "failed", row.reason or with_console(
                    target, row.aws_id, "the instance was terminated")
                notify(session, cluster.account_id, "instance-lost",
                       f"{row.role.capitalize()} {row.aws_id} is gone: {row.reason}",
                       level="warning", cluster=cluster)
            elif info.state == "running" and row.state == "launched":
                # Conditional: the agent may have reported "ready" since this pass read the
                # row, and a plain assignment would put it back to "booting" for good.
                session.execute(update(Instance).where(
                    Instance.id == row.id, Instance.state == "launched").values(
                    state="booting").execution_options(synchronize_session=False))
                session.expire(row, ["state"])
        session.commit()
        return actual

    def _check_health(self, session: Session, cluster: Cluster, target: Target,
                      actual: dict[str, InstanceInfo]) -> bool:
        """Retire instances that stopped answering; fail the cluster if its scheduler is lost."""
        stale = confirmed_dead(session, cluster, self.timeouts, actual)
        if stale:
            # The consoles first (a call to AWS each), then the rows: a notification's query
            # flushes the rows, and on SQLite that holds the one write lock until the commit.
            reasons = [with_console(target, row.aws_id, self.timeouts.stale_reason(row))
                       for row in stale]
            self.provider.terminate(target.ctx, [r.aws_id for r in stale if r.aws_id])
            for row, reason in zip(stale, reasons, strict=True):
                row.state, row.reason = "failed", reason
                notify(session, cluster.account_id, "instance-unhealthy",
                       f"{row.role.capitalize()} {row.aws_id}: {row.reason}", level="warning",
                       cluster=cluster)
        failed_scheduler = next((i for i in cluster.instances
                                 if i.role == "scheduler" and i.state == "failed"), None)
        live_scheduler = any(i.role == "scheduler" and i.state in LIVE for i in cluster.instances)
        if failed_scheduler and not live_scheduler:
            self.fail(session, cluster, f"The scheduler instance {failed_scheduler.aws_id} "
                      f"failed: {failed_scheduler.reason}")
            return True
        failures = sum(1 for i in cluster.instances if i.role == "worker" and i.state == "failed")
        if failures > max(3, 2 * cluster.n_workers):
            self.fail(session, cluster, f"{failures} workers failed; the last: "
                      f"{self._last_failure(cluster)}")
            return True
        return False

    @staticmethod
    def _last_failure(cluster: Cluster) -> str:
        failed = [i for i in cluster.instances if i.state == "failed"]
        return failed[-1].reason if failed else "unknown"

    def _ensure_counts(self, session, cluster, target, infra, opts: ClusterOptions) -> None:
        self._finish_removed(session, cluster, target)
        live = [i for i in cluster.instances if i.state in LIVE]
        wanted = [("scheduler", 1 - sum(i.role == "scheduler" for i in live)),
                  ("worker", cluster.n_workers - sum(i.role == "worker" for i in live))]
        for role, missing in wanted:
            for _ in range(max(missing, 0)):
                spot = role == "worker" and worker_is_spot(cluster, opts)
                types = opts.scheduler_vm_types if role == "scheduler" else opts.worker_vm_types
                cluster.instances.append(Instance(
                    cluster_id=cluster.id, role=role, instance_type=types[0], zone=cluster.zone,
                    spot=spot, state="requested"))
        extra = sum(i.role == "worker" for i in live) - cluster.n_workers
        if extra > 0:
            self._retire_workers(session, cluster, target, extra)
        session.commit()  # rows (and their ids) exist before anything is launched
        if not self.quota.ready(cluster.id):
            return  # a quota is reached: scaling waits (backoff) while what runs keeps running
        pending = [i for i in cluster.instances if i.state == "requested" and not i.aws_id]
        # Some of the batches: the next pass applies the reports meanwhile and goes on.
        self.launcher.launch_some(session, cluster, target, infra, opts, batches.plan(pending))

    def _finish_removed(self, session, cluster, target) -> None:
        """Terminate the workers the scale API was told to remove (Adaptive retired them on
        the scheduler already, so their data has moved)."""
        removed = [i for i in cluster.instances if i.role == "worker" and (
            i.state == "stopping" or (i.desired_state == "stopped"
                                      and i.state in (*LIVE, "failed")))]
        if not removed:
            return
        self.provider.terminate(target.ctx, [r.aws_id for r in removed if r.aws_id])
        for row in removed:
            row.state, row.reason = "terminated", "scaled down"
        notify(session, cluster.account_id, "cluster-scale-down",
               f"Terminated {len(removed)} retired worker(s): "
               f"{', '.join(r.aws_id or '(not launched)' for r in removed)}", cluster=cluster)

    def _retire_workers(self, session, cluster, target, count: int) -> None:
        workers = [i for i in cluster.instances if i.role == "worker" and i.state in LIVE]
        # Not-yet-ready ones first, then the newest: they hold the least work.
        workers.sort(key=lambda i: (i.state == "ready", -i.id))
        retire = workers[:count]
        for row in retire:
            row.state, row.reason = "terminated", "scaled down"
        self.provider.terminate(target.ctx, [r.aws_id for r in retire if r.aws_id])
        notify(session, cluster.account_id, "cluster-scale-down",
               f"Terminated {len(retire)} worker(s)", cluster=cluster)

    # --- stopping: terminate, delete the security group, done ------------------------------
    def _teardown(self, session: Session, cluster: Cluster, target: Target) -> None:
        actual = self.provider.list_instances(target.ctx, cluster_id=cluster.id)
        alive = [i.aws_id for i in actual if i.state not in ("terminated", "shutting-down")]
        if alive:
            self.provider.terminate(target.ctx, alive)
            notify(session, cluster.account_id, "instances-terminated",
                   f"Terminated {len(alive)} instance(s)", cluster=cluster)
        for row in cluster.instances:
            if row.state in LIVE or row.state == "stopping":
                row.state = "terminated"
        remaining = self.provider.close_firewall(target.ctx, cluster.id)
        if remaining:
            session.commit()
            return
        if cluster.security_group_id:
            notify(session, cluster.account_id, "security-group-deleted",
                   f"Security group {cluster.security_group_id} deleted", cluster=cluster)
        cluster.state, cluster.stopped_at = cluster.final_state, utcnow()
        self.zones.forget(cluster.id)
        self.quota.forget(cluster.id)
        self.view.forget(cluster.id)
        level = "error" if cluster.state == "error" else "info"
        notify(session, cluster.account_id, f"cluster-{cluster.state}",
               f"Cluster {cluster.state}" + (f": {cluster.reason}" if cluster.reason else ""),
               level=level, cluster=cluster)

    # --- transitions used from outside ------------------------------------------------------
    def fail(self, session: Session, cluster: Cluster, reason: str) -> None:
        cluster.reason, cluster.final_state, cluster.state = reason, "error", "stopping"
        notify(session, cluster.account_id, "cluster-error", reason, level="error",
               cluster=cluster)
        session.commit()

    def stop(self, session: Session, cluster: Cluster, event_type: str, reason: str) -> None:
        cluster.reason, cluster.state = reason, "stopping"
        notify(session, cluster.account_id, event_type, reason, cluster=cluster)
        session.commit()
