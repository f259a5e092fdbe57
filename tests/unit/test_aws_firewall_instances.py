"""Cluster security groups and instances, against in-process moto."""

from __future__ import annotations

import base64
from typing import ClassVar

import pytest

from overcast import tags as T
from overcast.backends.aws import firewall, instances, network
from overcast.backends.aws.errors import AwsError

REGION = "us-east-1"
ZONE = f"{REGION}a"


@pytest.fixture
def net(ctx):
    return network.ensure_network(ctx, "alice", zones=[ZONE])


def rules(ctx, group_id):
    out = set()
    resp = ctx.client("ec2").describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group_id]}]
    )
    for r in resp["SecurityGroupRules"]:
        if r["IsEgress"]:
            continue
        source = r.get("CidrIpv4") or r.get("ReferencedGroupInfo", {}).get("GroupId")
        out.add((r["IpProtocol"], r["FromPort"], r["ToPort"], source))
    return out


def test_security_group_rules_exact(ctx, net):
    seen = []
    sg = firewall.ensure_cluster_security_group(
        ctx, net.vpc_id, "alice", 7, "demo", [22, 8786, 8787], "0.0.0.0/0", seen.append
    )
    assert seen[0].kind == "security-group" and seen[0].state == "created"
    assert rules(ctx, sg) == {
        ("tcp", 22, 22, "0.0.0.0/0"),
        ("tcp", 8786, 8786, "0.0.0.0/0"),
        ("tcp", 8787, 8787, "0.0.0.0/0"),
        ("-1", -1, -1, sg),
    }
    group = ctx.client("ec2").describe_security_groups(GroupIds=[sg])["SecurityGroups"][0]
    tags = T.from_aws(group["Tags"])
    assert tags[T.CLUSTER] == "7" and tags[T.ACCOUNT] == "alice" and tags[T.MANAGED] == "true"
    assert group["VpcId"] == net.vpc_id

    again = firewall.ensure_cluster_security_group(
        ctx, net.vpc_id, "alice", 7, "demo", [22, 8786, 8787], "0.0.0.0/0", seen.append
    )
    assert again == sg and seen[-1].state == "found"
    assert len(rules(ctx, sg)) == 4

    # Changed settings converge: new CIDR and fewer ports.
    firewall.ensure_cluster_security_group(
        ctx, net.vpc_id, "alice", 7, "demo", [8786], "10.1.0.0/16"
    )
    assert rules(ctx, sg) == {("tcp", 8786, 8786, "10.1.0.0/16"), ("-1", -1, -1, sg)}
    assert [g.group_id for g in firewall.list_cluster_security_groups(ctx, 7)] == [sg]
    assert firewall.list_cluster_security_groups(ctx, 8) == []


def test_delete_cluster_security_groups(ctx, net):
    sg = firewall.ensure_cluster_security_group(
        ctx, net.vpc_id, "alice", 7, "demo", [8786], "0.0.0.0/0"
    )
    other = firewall.ensure_cluster_security_group(
        ctx, net.vpc_id, "alice", 8, "other", [8786], "0.0.0.0/0"
    )
    assert firewall.delete_cluster_security_groups(ctx, 7) == []
    left = {g["GroupId"] for g in ctx.client("ec2").describe_security_groups()["SecurityGroups"]}
    assert sg not in left and other in left
    assert firewall.delete_cluster_security_groups(ctx, 7) == []


def test_delete_security_group_in_use_is_left_for_later(ctx, net):
    sg = firewall.ensure_cluster_security_group(
        ctx, net.vpc_id, "alice", 7, "demo", [8786], "0.0.0.0/0"
    )

    class Http:
        status_code = 400
        headers: ClassVar[dict] = {}

    def in_use(**_):
        return Http(), {"Error": {"Code": "DependencyViolation", "Message": "in use"}}

    ctx.client("ec2").meta.events.register("before-call.ec2.DeleteSecurityGroup", in_use)
    seen = []
    assert firewall.delete_cluster_security_groups(ctx, 7, report=seen.append) == [sg]
    assert seen[0].state == "deleting"
    ctx.client("ec2").meta.events.unregister("before-call.ec2.DeleteSecurityGroup", in_use)
    assert firewall.delete_cluster_security_groups(ctx, 7) == []


def register_image(ctx, name):
    return ctx.client("ec2").register_image(
        Name=name, Architecture="x86_64", RootDeviceName="/dev/sda1"
    )["ImageId"]


def spec(ctx, net, sg, *, role="worker", spot=False, token="tok-1"):
    return instances.LaunchSpec(
        role=role,
        subnet_id=net.private_subnets[ZONE] if role == "worker" else net.public_subnets[ZONE],
        security_group_id=sg,
        instance_type="t3.medium",
        image_id=register_image(ctx, f"overcast-agent-{token}"),
        instance_profile=None,
        user_data='{"overcast": 1}',
        tags=T.resource_tags("alice", 7, Name=f"overcast-alice-demo-{role}"),
        spot=spot,
        client_token=token,
    )


def test_launch_spot_idempotent_and_tagged(ctx, net):
    sg = firewall.ensure_cluster_security_group(
        ctx, net.vpc_id, "alice", 7, "demo", [8786], "0.0.0.0/0"
    )
    s = spec(ctx, net, sg, spot=True)
    info = instances.launch(ctx, s)
    assert info.spot and info.role == "worker" and info.zone == ZONE
    assert info.subnet_id == net.private_subnets[ZONE]
    assert instances.launch(ctx, s).aws_id == info.aws_id
    ec2 = ctx.client("ec2")
    described = ec2.describe_instances(InstanceIds=[info.aws_id])["Reservations"][0]["Instances"][0]
    assert described["InstanceLifecycle"] == "spot"
    assert [g["GroupId"] for g in described["SecurityGroups"]] == [sg]
    tags = T.from_aws(described["Tags"])
    assert tags[T.CLUSTER] == "7" and tags[T.ROLE] == "worker" and tags[T.MANAGED] == "true"
    user_data = ec2.describe_instance_attribute(InstanceId=info.aws_id, Attribute="userData")
    assert base64.b64decode(user_data["UserData"]["Value"]).decode() == '{"overcast": 1}'
    volumes = ec2.describe_volumes(Filters=T.filters({T.CLUSTER: "7"}))["Volumes"]
    assert len(volumes) == 1

    on_demand = instances.launch(ctx, spec(ctx, net, sg, role="scheduler", token="tok-2"))
    assert not on_demand.spot and on_demand.public_ip
    assert {i.aws_id for i in instances.list_cluster_instances(ctx, 7)} == {
        info.aws_id,
        on_demand.aws_id,
    }
    assert {i.aws_id for i in instances.list_account_instances(ctx, "alice")} == {
        info.aws_id,
        on_demand.aws_id,
    }
    assert instances.list_account_instances(ctx, "bob") == []

    assert instances.terminate(ctx, [info.aws_id, "i-0123456789abcdef0"]) == [info.aws_id]
    assert [i.aws_id for i in instances.list_cluster_instances(ctx, 7)] == [on_demand.aws_id]
    everything = instances.list_cluster_instances(ctx, 7, include_terminated=True)
    assert {i.state for i in everything} == {"running", "terminated"}
    assert instances.terminate(ctx, []) == []


def test_instance_types(ctx):
    types = instances.instance_types(ctx, ["t3.medium", "g4dn.xlarge"])
    assert types["t3.medium"] == instances.TypeInfo("t3.medium", 2, 4096, 0)
    assert types["g4dn.xlarge"].gpus == 1
    with pytest.raises(AwsError, match="p3.8xlarge, bogus.x"):
        instances.instance_types(ctx, ["t3.medium", "p3.8xlarge", "bogus.x"])


def test_another_deployment_sees_none_of_our_instances_or_groups(ctx, net, monkeypatch):
    sg = firewall.ensure_cluster_security_group(
        ctx, net.vpc_id, "alice", 7, "demo", [8786], "0.0.0.0/0"
    )
    info = instances.launch(ctx, spec(ctx, net, sg))
    assert T.from_aws(ctx.client("ec2").describe_tags(Filters=[
        {"Name": "resource-id", "Values": [info.aws_id]}])["Tags"])[T.DEPLOYMENT] == \
        T.deployment_id()
    monkeypatch.setenv(T.DEPLOYMENT_ENV, "d-staging")  # a second control plane, same account
    assert instances.list_cluster_instances(ctx, 7) == []
    assert instances.list_account_instances(ctx, "alice") == []
    assert firewall.list_cluster_security_groups(ctx, 7) == []
    assert firewall.delete_cluster_security_groups(ctx, 7) == []
    with pytest.raises(AwsError, match="not created by this overcast control plane"):
        firewall.ensure_cluster_security_group(
            ctx, net.vpc_id, "alice", 7, "demo", [8786], "0.0.0.0/0")
    monkeypatch.setenv(T.DEPLOYMENT_ENV, "d-unit-tests")
    assert [i.aws_id for i in instances.list_cluster_instances(ctx, 7)] == [info.aws_id]
    assert [g.group_id for g in firewall.list_cluster_security_groups(ctx, 7)] == [sg]
