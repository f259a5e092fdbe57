"""The launch step of a starting or scaling cluster: batches of requested Instance rows become
launch calls (launch.py), once the VM image and the software environment are there. When AWS
has no capacity, spot falls back to on-demand, else the batch moves zone.

A step makes up to `CONCURRENT_CALLS` calls at once (the scheduler's first in the plan): 1,000
workers are eleven calls of at most 100, and RunInstances of 100 takes a second or more on
EC2. Between steps the reconciler applies the agents' reports, so workers of the first
batches count as ready while the last ones launch. Every answer of a step is recorded before
any of its errors is acted on.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.orm import Session

from overcast.backends import Provider
from overcast.backends.base import CapacityError, InstanceInfo, ProviderError, QuotaExceeded
from overcast.options import ClusterOptions
from overcast.reconciler import batches, envbuilds, images
from overcast.reconciler.contexts import Target
from overcast.reconciler.infra import Infra
from overcast.reconciler.launch import launch_spec
from overcast.reconciler.observe import AccountView
from overcast.reconciler.placement import PlacementError, Zones
from overcast.reconciler.quota import QuotaHold
from overcast.store.models import Cluster, utcnow
from overcast.store.notify import notify

CONCURRENT_CALLS = 4  # one cluster's launch calls in flight at once

Software = tuple[str, dict] | None


class BatchLauncher:
    """Shares the cluster machine's provider, zones, quota holds and account view."""

    def __init__(self, provider: Provider, zones: Zones, quota: QuotaHold, view: AccountView,
                 control_plane: str, control_plane_ca: str | None) -> None:
        self.provider, self.zones, self.quota, self.view = provider, zones, quota, view
        self.control_plane, self.control_plane_ca = control_plane, control_plane_ca
        self._calls = ThreadPoolExecutor(CONCURRENT_CALLS, thread_name_prefix="overcast-launch")

    def launch_some(self, session: Session, cluster: Cluster, target: Target, infra: Infra,
                    opts: ClusterOptions, plan: list[batches.Batch]) -> None:
        """This step's calls, up to CONCURRENT_CALLS at once; the next steps launch the rest."""
        if len(plan) == 1:
            self.launch(session, cluster, target, infra, opts, plan[0])
        elif plan:
            self._launch_together(session, cluster, target, infra, opts,
                                  plan[:CONCURRENT_CALLS])

    def launch(self, session: Session, cluster: Cluster, target: Target, infra: Infra,
               opts: ClusterOptions, batch: batches.Batch) -> bool:
        """One launch call for the batch's rows. False: stop launching in this pass."""
        prepared = self._prepare(session, cluster, target)
        if prepared is None:
            return False
        image, software = prepared
        token = batches.start(cluster, batch)
        session.commit()  # the token is recorded before the call: a crash finds the batch
        spec = self._spec(cluster, infra, opts, batch, token, image, software)
        try:
            infos = self.provider.launch(target.ctx, [spec])
        except ProviderError as exc:
            return self._refused(session, cluster, target, infra, opts, batch, image, exc)
        self._record(session, cluster, batch, infos)
        return True

    def _launch_together(self, session: Session, cluster: Cluster, target: Target,
                         infra: Infra, opts: ClusterOptions,
                         together: list[batches.Batch]) -> None:
        """The batches' calls at once. Every answer is recorded before any error is acted on
        (an error may move the cluster's zone, which terminates what was launched there)."""
        prepared = self._prepare(session, cluster, target)
        if prepared is None:
            return
        image, software = prepared
        specs = [self._spec(cluster, infra, opts, batch, batches.start(cluster, batch), image,
                            software) for batch in together]
        session.commit()  # the tokens are recorded before the calls: a crash finds them
        calls = [self._calls.submit(self.provider.launch, target.ctx, [spec]) for spec in specs]
        answers = [(batch, call.exception() or call.result())
                   for batch, call in zip(together, calls, strict=True)]
        for batch, answer in answers:
            if isinstance(answer, list):
                self._record(session, cluster, batch, answer)
        going = True
        for batch, answer in answers:
            if not isinstance(answer, BaseException):
                continue
            if not isinstance(answer, ProviderError):
                raise answer  # the tokens stay: the next pass looks the batch up
            if going:
                going = self._refused(session, cluster, target, infra, opts, batch, image,
                                      answer)
            elif isinstance(answer, (CapacityError, QuotaExceeded)) or \
                    answer.code in images.AMI_GONE:
                batches.forget(batch)  # refused: nothing was made; a later pass asks again
        session.commit()

    def _prepare(self, session: Session, cluster: Cluster,
                 target: Target) -> tuple[str, Software] | None:
        """The VM image and the software environment, or None while one is being built."""
        try:
            image = self._image(session, cluster, target)
        except images.WaitingForImage as exc:
            # The build's own notifications tell its progress; the start timeout counts
            # from when the image is there. The cluster's own row says what it waits for
            # (the start progress shows it; a repeat is a count, not a row).
            cluster.started_at = utcnow()
            notify(session, cluster.account_id, "waiting-vm-image",
                   f"{exc} It is built once per account and region (a few minutes); the "
                   "cluster starts when it is ready.", cluster=cluster)
            session.commit()
            return None
        try:
            first = not any(i.aws_id for i in cluster.instances)  # look it up once
            software = envbuilds.cluster_software(session, cluster.account,
                                                  cluster.options.get("software"),
                                                  target if first else None)
        except envbuilds.WaitingForEnvironment:
            # The build's notifications tell its progress; the start timeout and the boot
            # timeout of instances not launched yet count from when the image is there.
            cluster.started_at = now = utcnow()
            wanted = cluster.options.get("software") or {}
            notify(session, cluster.account_id, "waiting-environment",
                   f"Waiting for the image of software environment {wanted.get('name')} v"
                   f"{wanted.get('version')} to be built (once per environment version); the "
                   "cluster starts when it is ready.", cluster=cluster)
            for waiting in cluster.instances:
                if waiting.state == "requested" and not waiting.aws_id:
                    waiting.created_at = now
            session.commit()
            return None
        except envbuilds.EnvironmentFailed as exc:
            raise PlacementError(str(exc)) from None
        return image, software

    def _spec(self, cluster: Cluster, infra: Infra, opts: ClusterOptions,
              batch: batches.Batch, token: str, image: str, software: Software):
        return launch_spec(infra, cluster, batch.rows, token, image, self.control_plane, opts,
                           cluster.security_group_id, self.control_plane_ca, software)

    def _refused(self, session: Session, cluster: Cluster, target: Target, infra: Infra,
                 opts: ClusterOptions, batch: batches.Batch, image: str,
                 exc: ProviderError) -> bool:
        """A launch call that failed. False: stop launching in this pass."""
        if isinstance(exc, CapacityError):
            batches.forget(batch)  # refused: nothing was made
            return self._no_capacity(session, cluster, target, infra, opts, batch, exc)
        if isinstance(exc, QuotaExceeded):
            batches.forget(batch)
            self.quota.hit(session, cluster, exc)
            return False
        if exc.code not in images.AMI_GONE:
            raise exc
        batches.forget(batch)  # refused: nothing was made
        images.forget_gone(session, image, exc.code)
        notify(session, cluster.account_id, "image-gone",
               f"The overcast VM image {image} is gone from AWS ({exc.code}); building "
               "it again.", level="warning", cluster=cluster)
        session.commit()
        return False

    def _record(self, session: Session, cluster: Cluster, batch: batches.Batch,
                infos: list[InstanceInfo]) -> None:
        """The call's instances on the batch's rows, and one notification."""
        self.quota.cleared(cluster.id)
        self.view.note_launched(cluster.id, infos)
        # Agents' identity documents must name this account (server/identity.py).
        cluster.aws_account_id = cluster.aws_account_id or next(
            (i.account for i in infos if i.account), None)
        pairs = batches.assign(cluster, batch, infos)
        for row, info in pairs:
            row.aws_id, row.zone, row.subnet_id = info.aws_id, info.zone, info.subnet_id
            row.state = "booting" if info.state == "running" else "launched"
        first = batch.first
        ids = [info.aws_id for _, info in pairs]
        what = f"{len(ids)} {first.role}s" if len(ids) > 1 else first.role.capitalize()
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        notify(session, cluster.account_id, f"{first.role}-launched",
               f"{what} {shown} launched ({first.instance_type}"
               f"{', spot' if first.spot else ''}) in {pairs[0][1].zone if pairs else '?'}",
               cluster=cluster)
        session.commit()

    def _no_capacity(self, session: Session, cluster: Cluster, target: Target, infra: Infra,
                     opts: ClusterOptions, batch: batches.Batch, exc: CapacityError) -> bool:
        """Spot falls back to on-demand, else the batch (a starting cluster: all of it) moves
        to the next zone with capacity (placement.py)."""
        first = batch.first
        if first.spot and opts.spot_on_demand_fallback:
            for row in batch.rows:
                row.spot = False
            notify(session, cluster.account_id, "spot-fallback",
                   f"No spot capacity ({exc}); launching on-demand", level="warning",
                   cluster=cluster)
            session.commit()
            return self.launch(session, cluster, target, infra, opts, batch)
        try:
            leaving = self.zones.fail_over(session, cluster, target, opts, first, exc)
        except PlacementError as exhausted:
            if cluster.state != "running":
                raise
            # No zone has room for more workers now: what runs keeps running.
            self.zones.forget(cluster.id)
            for row in batch.rows:
                row.zone = cluster.zone
            self.quota.hold(session, cluster, "capacity-waiting",
                            f"{exhausted} The cluster keeps running; overcast tries "
                            "again later.")
            return False
        for row in batch.rows:  # a running cluster moves only this batch
            row.zone = first.zone
        session.commit()
        if leaving:
            self.provider.terminate(target.ctx, leaving)
        return False

    def _image(self, session: Session, cluster: Cluster, target: Target) -> str:
        """The account's built overcast image (reconciler/images.py), else a build the
        cluster waits for."""
        return images.resolve(session, cluster.account, target)
