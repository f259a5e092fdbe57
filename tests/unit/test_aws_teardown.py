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
    return instances.launch(ctx, spec)[0]


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
