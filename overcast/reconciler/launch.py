"""Turning an Instance row into an EC2 instance: subnet, type, user data, tags, spot."""

from __future__ import annotations

from overcast import crypto, tags
from overcast.backends.base import InstanceInfo, LaunchSpec
from overcast.bootconfig import BootConfig
from overcast.options import ClusterOptions
from overcast.reconciler.contexts import Target
from overcast.reconciler.infra import Infra
from overcast.store.models import Cluster, Instance

INSTANCE_ROW_TAG = "overcast:instance"


def client_token(cluster: Cluster, row: Instance) -> str:
    # Same row, same token: a retried RunInstances after a crash does not launch twice.
    return f"overcast-{cluster.id}-{row.id}"


def instance_tags(cluster: Cluster, row: Instance) -> dict[str, str]:
    slug = cluster.account.slug
    return tags.resource_tags(slug, cluster.id, **{
        tags.ROLE: row.role, INSTANCE_ROW_TAG: str(row.id),
        "Name": f"overcast-{slug}-{cluster.name}-{row.role}"})


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
                      shutdown_after_unreachable=opts.shutdown_after_unreachable)


def launch(provider, target: Target, infra: Infra, cluster: Cluster, row: Instance,
           image_id: str, control_plane: str, opts: ClusterOptions,
           security_group_id: str, control_plane_ca: str | None = None,
           software: tuple[str, dict] | None = None) -> InstanceInfo:
    zone = row.zone or cluster.zone
    subnets = infra.network.public_subnets if row.role == "scheduler" else \
        infra.network.private_subnets
    spec = LaunchSpec(
        role=row.role, subnet_id=subnets[zone], security_group_id=security_group_id,
        instance_type=row.instance_type, image_id=image_id,
        instance_profile=infra.instance_profile,
        # A cloud-init document: cloud-init writes the boot document, then starts the agent.
        user_data=boot_config(cluster, row, control_plane, opts,
                              control_plane_ca, software).to_cloud_init(),
        tags=instance_tags(cluster, row), spot=row.spot, client_token=client_token(cluster, row))
    return provider.launch(target.ctx, [spec])[0]
