"""Turning a batch of Instance rows into EC2 instances: subnet, type, user data, tags, spot.

One user data serves the whole batch (and every instance of the role): the agent learns which
instance it is from the IMDS and proves it with the signed identity document (identity.py).
"""

from __future__ import annotations

from overcast import crypto, tags
from overcast.backends.base import LaunchSpec
from overcast.bootconfig import BootConfig
from overcast.options import ClusterOptions
from overcast.reconciler.infra import Infra
from overcast.store.models import Cluster, Instance

# Instances launched one per row (before batches) carry their row id; still adopted by it.
INSTANCE_ROW_TAG = "overcast:instance"
# Heartbeat intervals (boot document): a worker's beat says only "alive" (1,000 workers: 67
# requests/s); the scheduler's carries the activity the idle/no-client timeouts act on.
HEARTBEAT_INTERVAL = {"scheduler": 5.0, "worker": 15.0}


def instance_tags(cluster: Cluster, role: str) -> dict[str, str]:
    slug = cluster.account.slug
    return tags.resource_tags(slug, cluster.id, **{
        tags.ROLE: role, "Name": f"overcast-{slug}-{cluster.name}-{role}"})


def boot_config(cluster: Cluster, row: Instance, control_plane: str,
                opts: ClusterOptions, control_plane_ca: str | None = None,
                software: tuple[str, dict] | None = None) -> BootConfig:
    resources = {"GPU": 1} if row.role == "worker" and opts.worker_gpu else {}
    image, registry = software or (None, None)
    return BootConfig(software_image=image, registry=registry,
                      control_plane=control_plane, cluster_id=cluster.id,
                      cluster_token=crypto.decrypt(cluster.token_encrypted), role=row.role,
                      log_group=cluster.account.slug, region=cluster.region,
                      worker_resources=resources, control_plane_ca=control_plane_ca,
                      heartbeat_interval=HEARTBEAT_INTERVAL[row.role],
                      shutdown_after_unreachable=opts.shutdown_after_unreachable)


def launch_spec(infra: Infra, cluster: Cluster, rows: list[Instance], token: str,
                image_id: str, control_plane: str, opts: ClusterOptions,
                security_group_id: str, control_plane_ca: str | None = None,
                software: tuple[str, dict] | None = None) -> LaunchSpec:
    """The launch call of the batch `rows`. Reads the rows and the cluster: build it in the
    thread that owns their session."""
    row = rows[0]
    zone = row.zone or cluster.zone
    subnets = infra.network.public_subnets if row.role == "scheduler" else \
        infra.network.private_subnets
    return LaunchSpec(
        role=row.role, subnet_id=subnets[zone], security_group_id=security_group_id,
        instance_type=row.instance_type, image_id=image_id,
        instance_profile=infra.instance_profile,
        # A cloud-init document: cloud-init writes the boot document, then starts the agent.
        user_data=boot_config(cluster, row, control_plane, opts,
                              control_plane_ca, software).to_cloud_init(),
        tags=instance_tags(cluster, row.role), spot=row.spot, client_token=token,
        count=len(rows))
