"""teardown_account removes everything overcast made for one account, and nothing else."""

from __future__ import annotations

from overcast import tags as T
from overcast.backends.aws import (
    firewall,
    iam,
    instances,
    logs,
    network,
    registry,
    teardown,
)

ZONE = "us-east-1a"


def make_account(ctx, slug, owner):
    net = network.ensure_network(ctx, owner, zones=[ZONE])
    iam.ensure_instance_role(ctx, slug)
    logs.ensure_log_group(ctx, slug)
    registry.ensure_ecr_repository(ctx, slug)
    sg = firewall.ensure_cluster_security_group(
        ctx, net.vpc_id, slug, hash(slug) % 1000, "c", [8786], "0.0.0.0/0"
    )
    image = ctx.client("ec2").register_image(
        Name=f"overcast-agent-{slug}", Architecture="x86_64", RootDeviceName="/dev/sda1"
    )["ImageId"]
    spec = instances.LaunchSpec(
        "worker",
        net.private_subnets[ZONE],
        sg,
        "t3.medium",
        image,
        slug,
        "{}",
        T.resource_tags(slug, hash(slug) % 1000),
        False,
        f"tok-{slug}",
    )
    return instances.launch(ctx, spec)


def test_teardown_account(ctx):
    make_account(ctx, "alice", "alice")
    bob = make_account(ctx, "bob", "bob")
    seen: list[network.Resource] = []
    teardown.teardown_account(ctx, "alice", "alice", seen.append)
    kinds = {r.kind for r in seen if r.state == "deleted"}
    assert kinds == {
        "instance",
        "security-group",
        "iam-role",
        "instance-profile",
        "log-group",
        "ecr-repository",
        "nat-gateway",
        "elastic-ip",
        "subnet-public",
        "subnet-private",
        "route-table",
        "internet-gateway",
        "vpc",
    }
    assert instances.list_account_instances(ctx, "alice") == []
    assert network.find_network(ctx, "alice") is None
    assert [r["RoleName"] for r in ctx.client("iam").list_roles()["Roles"]] == ["bob"]
    assert [i.aws_id for i in instances.list_account_instances(ctx, "bob")] == [bob.aws_id]
    assert network.find_network(ctx, "bob") is not None
    teardown.teardown_account(ctx, "alice", "alice")  # idempotent


def test_hosted_account_keeps_the_shared_network(ctx):
    make_account(ctx, "carol", T.OPERATOR)
    teardown.teardown_account(ctx, "carol", T.OPERATOR)
    assert instances.list_account_instances(ctx, "carol") == []
    assert network.find_network(ctx, T.OPERATOR) is not None


def _overcast_image(ctx, instance_id: str, account: str, deployment: str | None = None) -> dict:
    """CreateImage of an instance, named and tagged as the image pipeline does (another
    control plane's image when `deployment` is given)."""
    from overcast.backends.aws import images

    tags = images.image_tags(account, "0.1.0")
    if deployment:
        tags[T.DEPLOYMENT] = deployment
    ec2 = ctx.client("ec2")
    ami = ec2.create_image(InstanceId=instance_id, Name=f"overcast-agent-0.1.0-{account}-"
                           f"{deployment or 'ours'}",
                           TagSpecifications=[{"ResourceType": "image",
                                               "Tags": T.as_aws(tags)}])["ImageId"]
    return ec2.describe_images(ImageIds=[ami])["Images"][0]


def _snapshots(image: dict) -> list[str]:
    return [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"] if "Ebs" in m]


def test_teardown_deregisters_only_our_images_of_the_account(ctx):
    alice, bob = make_account(ctx, "alice", "alice"), make_account(ctx, "bob", "bob")
    mine = _overcast_image(ctx, alice.aws_id, "alice")
    theirs = _overcast_image(ctx, alice.aws_id, "alice", deployment="d-someone-else")
    bobs = _overcast_image(ctx, bob.aws_id, "bob")
    assert _snapshots(mine), "moto gives a created image a snapshot"
    seen: list[network.Resource] = []
    teardown.teardown_account(ctx, "alice", "alice", seen.append)

    ec2 = ctx.client("ec2")
    left = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    assert mine["ImageId"] not in left
    assert {theirs["ImageId"], bobs["ImageId"]} <= left
    snaps = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert not set(_snapshots(mine)) & snaps
    assert set(_snapshots(theirs) + _snapshots(bobs)) <= snaps
    deleted = {(r.kind, r.aws_id) for r in seen if r.state == "deleted"}
    assert ("image", mine["ImageId"]) in deleted
    assert {("snapshot", s) for s in _snapshots(mine)} <= deleted
