"""The policy documents match the calls the code makes, phase by phase."""

from __future__ import annotations

import contextlib
import json
import re

import boto3
import pytest
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count

from overcast import tags as T
from overcast.backends.aws import (
    firewall,
    iam,
    images,
    instances,
    logs,
    network,
    policies,
    registry,
    session,
    teardown,
)
from overcast.backends.aws.errors import PermissionMissing
from overcast.localcloud import motofixes

REGION = "us-east-1"
ZONES = [f"{REGION}a", f"{REGION}b"]


def test_documents_are_well_formed():
    for name in policies.NAMES:
        doc = policies.load(name)
        assert doc["Version"] == "2012-10-17"
        assert json.loads(policies.text(name)) == doc
        for statement in doc["Statement"]:
            assert statement["Effect"] == "Allow"
            # Least privilege: only the Describe calls (which take no resource) use "*".
            if statement["Resource"] == "*":
                assert all(":Describe" in a for a in statement["Action"]), statement["Sid"]
        assert all(re.fullmatch(r"[a-z0-9]+:[A-Z][A-Za-z]+", a) for a in policies.actions(name))
    # Tagging at creation is the one action both phases need (network vs. instances).
    assert policies.actions("setup") & policies.actions("ongoing") == {"ec2:CreateTags"}
    assert policies.all_actions() >= policies.IMPLIED
    with pytest.raises(ValueError):
        policies.load("admin")


def test_documents_are_scoped_to_the_deployment_and_role():
    text = json.dumps(policies.load("ongoing", "d-prod", "alice"))
    assert "OVERCAST_" not in text and '"d-prod"' in text
    passrole = next(s for s in policies.load("ongoing", "d-prod", "alice")["Statement"]
                    if s["Action"] == ["iam:PassRole"])
    assert passrole["Resource"] == "arn:aws:iam::*:role/alice"
    assert passrole["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    assert "OVERCAST_" not in policies.text("setup")  # unscoped: "*" stands in


def _setup(ctx):
    network.ensure_network(ctx, "alice", zones=ZONES)
    iam.ensure_instance_role(ctx, "alice")
    logs.ensure_log_group(ctx, "alice")
    registry.ensure_ecr_repository(ctx, "alice")


def register_image(ctx) -> str:
    """The AMI clusters launch from (the image pipeline's, found in its database row: no EC2
    look-up on a cluster's path)."""
    return ctx.client("ec2").register_image(
        Name="overcast-agent-1", Architecture="x86_64", RootDeviceName="/dev/sda1")["ImageId"]


def _cluster(ctx, image, ports=(22, 8786, 8787)):
    net = network.find_network(ctx, "alice")
    assert net is not None
    net = network.ensure_zone_subnets(ctx, net, "alice", ZONES[0])
    network.zones(ctx)
    instances.instance_types(ctx, ["t3.medium"])
    sg = firewall.ensure_cluster_security_group(
        ctx, net.vpc_id, "alice", 1, "demo", list(ports), "0.0.0.0/0"
    )
    [info] = instances.launch(
        ctx,
        instances.LaunchSpec(
            "scheduler",
            net.public_subnets[ZONES[0]],
            sg,
            "t3.medium",
            image,
            "alice",
            "{}",
            T.resource_tags("alice", 1),
            False,
            "tok-1",
        ),
    )
    instances.list_cluster_instances(ctx, 1)
    instances.list_account_instances(ctx, "alice")
    images.console_output(ctx, info.aws_id)  # a failed boot quotes the console
    logs.read_streams(ctx, "alice", [info.aws_id])
    firewall.list_cluster_security_groups(ctx, 1)
    return info


def _image_build(ctx):
    """The VM image pipeline's calls, in the order reconciler/images.py makes them."""
    net = network.find_network(ctx, "alice")
    stock = ctx.client("ec2").describe_images()["Images"][0]["ImageId"]
    builder = images.launch_builder(
        ctx, image_id=stock, subnet_id=net.public_subnets[ZONES[0]], instance_profile="alice",
        user_data="#!/bin/sh\n", tags=images.image_tags("alice", "1"), client_token="img-1")
    images.describe_instance(ctx, builder.aws_id)
    images.console_output(ctx, builder.aws_id)
    for n in range(3):
        ami = images.create_image(ctx, builder.aws_id, f"overcast-agent-1-{n}",
                                  images.image_tags("alice", "1"))
        images.describe_image(ctx, ami)
    assert images.prune_images(ctx, "alice", protect=ami)
    instances.terminate(ctx, [builder.aws_id])
    # moto refuses /aws/... names to put_parameter: a missing one is AWS's answer too.
    with contextlib.suppress(images.AwsError):
        images.stock_debian_ami(ctx)


def _env_build(ctx):
    """A software environment build's calls (reconciler/envbuilds.py): ongoing policy."""
    registry.find_repository_uri(ctx, "alice")
    assert not registry.image_exists(ctx, "alice", "a" * 64)
    net = network.find_network(ctx, "alice")
    stock = ctx.client("ec2").describe_images()["Images"][0]["ImageId"]
    builder = images.launch_builder(
        ctx, image_id=stock, subnet_id=net.public_subnets[ZONES[0]], instance_profile="alice",
        user_data="#!/bin/sh\n", tags=images.image_tags("alice", "1"), client_token="env-1",
        role="env-builder")
    assert images.find_builder(ctx, "env-1").aws_id == builder.aws_id
    images.console_output(ctx, builder.aws_id)
    instances.terminate(ctx, [builder.aws_id])


def test_every_call_is_in_its_phase_policy(aws_env):
    with mock_aws():
        ctx = session.context(REGION)
        image = register_image(ctx)
        calls = session.record_actions(ctx)
        _setup(ctx)
        _image_build(ctx)
        setup_calls = set(calls)
        assert setup_calls <= policies.all_actions()

        calls.clear()
        info = _cluster(ctx, image)
        _env_build(ctx)
        # Firewall settings changed: rules are revoked and added with the ongoing policy.
        _cluster(ctx, image, ports=(8786,))
        instances.terminate(ctx, [info.aws_id])
        firewall.delete_cluster_security_groups(ctx, 1)
        cluster_calls = set(calls)
        assert cluster_calls <= policies.actions("ongoing"), cluster_calls - policies.actions(
            "ongoing"
        )

        calls.clear()
        # Repairs: a NAT gateway deleted by hand, a policy attached to the role by a user.
        ec2 = ctx.client("ec2")
        net = network.find_network(ctx, "alice")
        ec2.delete_nat_gateway(NatGatewayId=net.nat_gateway_id)
        _setup(ctx)
        arn = ctx.client("iam").create_policy(
            PolicyName="s3",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
                }
            ),
        )["Policy"]["Arn"]
        ctx.client("iam").attach_role_policy(RoleName="alice", PolicyArn=arn)
        calls.clear()
        _cluster(ctx, image)
        teardown.teardown_account(ctx, "alice", "alice")
        teardown_calls = set(calls)
        assert teardown_calls <= policies.all_actions()

        used = setup_calls | cluster_calls | teardown_calls
        unused = policies.all_actions() - policies.IMPLIED - used
        # Only called on paths moto does not reach (its subnets keep no associations after
        # deletion, its routes never go blackhole after a NAT is deleted).
        assert unused <= {"ec2:DisassociateRouteTable", "ec2:ReplaceRoute"}, unused


ADMIN = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
)


def _admin_iam():
    """The first three requests are free: make an admin whose key signs everything else."""
    iam_client = boto3.client("iam", region_name=REGION)
    iam_client.create_user(UserName="admin")
    iam_client.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=ADMIN)
    key = iam_client.create_access_key(UserName="admin")["AccessKey"]
    return boto3.client(
        "iam",
        region_name=REGION,
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )


def _customer_ctx(admin, *names):
    admin.create_user(UserName="customer")
    for name in names:
        admin.put_user_policy(
            UserName="customer", PolicyName=name, PolicyDocument=policies.text(name)
        )
    key = admin.create_access_key(UserName="customer")["AccessKey"]
    return session.context(REGION, key["AccessKeyId"], key["SecretAccessKey"])


@set_initial_no_auth_action_count(3)
def test_least_privilege_under_moto_enforcement(aws_env):
    motofixes.apply()  # as the local cloud runs moto: ARN-scoped statements match
    with mock_aws():
        admin = _admin_iam()
        ctx = _customer_ctx(admin, "setup", "ongoing")
        _setup(ctx)
        assert admin.get_role(RoleName="alice")["Role"]["RoleName"] == "alice"
        # Detach setup: existing zones keep working, a new zone cannot get its subnets.
        admin.delete_user_policy(UserName="customer", PolicyName="setup")
        net = network.find_network(ctx, "alice")
        assert net is not None and sorted(net.public_subnets) == ZONES
        assert network.ensure_zone_subnets(ctx, net, "alice", ZONES[1]) is net
        firewall.ensure_cluster_security_group(
            ctx, net.vpc_id, "alice", 1, "demo", [8786], "0.0.0.0/0"
        )
        with pytest.raises(PermissionMissing) as info:
            network.ensure_zone_subnets(ctx, net, "alice", f"{REGION}c")
        assert info.value.actions == ["ec2:CreateSubnet"]
        assert f"{REGION}c" in str(info.value) and "setup" in str(info.value)
        with pytest.raises(PermissionMissing) as denied:
            logs.delete_log_group(ctx, "alice")
        assert denied.value.actions == ["logs:DeleteLogGroup"]
        assert "<" not in str(denied.value)
