"""Where and on what a cluster's instances run: instance types checked against EC2, the
cluster's zone, zone failover on capacity errors, and spot versus on-demand workers."""

from __future__ import annotations

from sqlalchemy.orm import Session

from overcast.backends.base import CapacityError
from overcast.options import DEFAULT_GPU_WORKER_VM_TYPES, ClusterOptions, one_gpu_message
from overcast.reconciler.contexts import Target
from overcast.reconciler.infra import Infra, InfraCache
from overcast.store.models import Cluster, Instance
from overcast.store.notify import notify

SPOT_INTERRUPTED = "spot interruption"
LIVE = ("requested", "launched", "booting", "ready")


class PlacementError(Exception):
    """The cluster cannot run as asked; the message says what to change."""


def check_instance_types(provider, target: Target, opts: ClusterOptions) -> ClusterOptions:
    """Ask EC2 about the wanted types (unknown ones raise an AwsError naming them) and apply
    the one-GPU-per-worker rule to types options.py's static table does not know."""
    found = provider.instance_types(target.ctx, opts.scheduler_vm_types + opts.worker_vm_types)
    many = [t for t in opts.worker_vm_types if found[t].gpus > 1]
    if many:
        raise PlacementError(one_gpu_message(
            ", ".join(f"{t} has {found[t].gpus} GPUs" for t in many)))
    with_gpu = [t for t in opts.worker_vm_types if found[t].gpus == 1]
    if opts.worker_gpu and len(with_gpu) < len(opts.worker_vm_types):
        plain = [t for t in opts.worker_vm_types if t not in with_gpu]
        raise PlacementError(
            f"worker_gpu=1 asks for GPU workers, but {', '.join(plain)} has no GPU: use a GPU "
            f"type such as {DEFAULT_GPU_WORKER_VM_TYPES[0]}, or leave worker_vm_types unset.")
    if with_gpu:
        opts.worker_gpu = 1
    return opts


def worker_is_spot(cluster: Cluster, opts: ClusterOptions) -> bool:
    """Spot, unless spot_on_demand_fallback asks to replace an interrupted worker on-demand."""
    if not opts.spot:
        return False
    if not opts.spot_on_demand_fallback:
        return True
    workers = [r for r in cluster.instances if r.role == "worker"]
    interrupted = sum(1 for r in workers if r.reason == SPOT_INTERRUPTED)
    on_demand = sum(1 for r in workers if not r.spot and r.state != "requested")
    return on_demand >= interrupted


class Zones:
    """Zone choice and failover; remembers per cluster which zones had no capacity."""

    def __init__(self, infra: InfraCache) -> None:
        self.infra = infra
        self._tried: dict[int, set[str]] = {}
        self._region_zones: dict[tuple[int, str], list[str]] = {}

    def zones_of(self, target: Target) -> list[str]:
        key = (id(target.ctx), target.ctx.region)
        if key not in self._region_zones:
            self._region_zones[key] = self.infra.provider.zones(target.ctx)
        return self._region_zones[key]

    def default_zone(self, target: Target, infra: Infra) -> str:
        """The region's default: its first zone that has overcast subnets, else its first."""
        ready = sorted(set(infra.network.private_subnets) & set(infra.network.public_subnets))
        return ready[0] if ready else self.zones_of(target)[0]

    def fail_over(self, session: Session, cluster: Cluster, target: Target,
                  opts: ClusterOptions, row: Instance, exc: CapacityError) -> list[str]:
        """Move the cluster (or, once running, this worker) to the next zone with capacity.

        Returns the ids of instances to terminate (launched in the zone being left). Raises
        PlacementError when the zone was pinned or every zone of the region was tried."""
        failed = exc.zone or row.zone or cluster.zone or "?"
        what = row.instance_type
        if opts.zone_pinned:
            raise PlacementError(
                f"Zone {failed} was pinned (backend option 'zone', or the account's zone) and "
                f"EC2 has no capacity there for {what} ({exc.code}). Pick another zone of "
                f"{cluster.region}, or leave 'zone' unset so overcast moves to a zone with "
                f"capacity.")
        tried = self._tried.setdefault(cluster.id, set())
        tried.add(failed)
        region_zones = self.zones_of(target)
        start = region_zones.index(failed) + 1 if failed in region_zones else 0
        ordered = region_zones[start:] + region_zones[:start]
        left = [z for z in ordered if z not in tried]
        if not left:
            raise PlacementError(
                f"No zone of {cluster.region} has capacity for {what} right now (tried "
                f"{', '.join(sorted(tried))}). Try another instance type or region, or later.")
        chosen = left[0]
        self.infra.ensure(session, cluster.account, target, cluster.region, chosen)
        leaving: list[str] = []
        if cluster.state == "starting":
            # A cluster lives in one zone: move all of it while nothing runs yet.
            for other in cluster.instances:
                if other.state in LIVE and other.aws_id:
                    leaving.append(other.aws_id)
                    other.state, other.reason = "terminated", f"moved to {chosen}"
                elif other.state == "requested":
                    other.zone = chosen
            cluster.zone = chosen
            scope = "Launching the cluster"
        else:
            row.zone = chosen
            scope = f"Launching this {row.role}"
        notify(session, cluster.account_id, "zone-failover",
               f"No capacity in {failed} for {what} ({exc.code}); {scope} in {chosen} instead",
               level="warning", cluster=cluster)
        session.commit()
        return leaving

    def forget(self, cluster_id: int) -> None:
        self._tried.pop(cluster_id, None)
