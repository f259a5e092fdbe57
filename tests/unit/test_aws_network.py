"""overcast.backends.aws.network against in-process moto."""

from __future__ import annotations

import ipaddress
from typing import ClassVar

import pytest

from overcast import tags as T
from overcast.backends.aws import network
from overcast.backends.aws.errors import PermissionMissing

REGION = "us-east-1"


def deny(ctx, service, operation, code="UnauthorizedOperation", message=None):
    """Make `operation` fail as AWS would, via botocore's before-call short-circuit."""

    class Http:
        status_code = 403
        headers: ClassVar[dict] = {}

    msg = message or "You are not authorized to perform this operation."

    def hook(**_):
        return Http(), {"Error": {"Code": code, "Message": msg}, "ResponseMetadata": {}}

    ctx.client(service).meta.events.register(f"before-call.{service}.{operation}", hook)


def test_ensure_network_creates_everything_once(ctx):
    first: list[network.Resource] = []
    net = network.ensure_network(ctx, "alice", report=first.append)
    assert {r.state for r in first} == {"created"}
    kinds = {r.kind for r in first}
    assert kinds == {
        "vpc",
        "internet-gateway",
        "route-table",
        "subnet-public",
        "subnet-private",
        "elastic-ip",
        "nat-gateway",
    }
    assert sorted(net.public_subnets) == network.zones(ctx) == [f"{REGION}{c}" for c in "abcdef"]
    assert sorted(net.private_subnets) == sorted(net.public_subnets)

    again: list[network.Resource] = []
    assert network.ensure_network(ctx, "alice", report=again.append) == net
    assert {r.state for r in again} == {"found"}
    assert {(r.kind, r.aws_id) for r in again} >= {(r.kind, r.aws_id) for r in first} - {
        ("elastic-ip", r.aws_id) for r in first
    }
    ec2 = ctx.client("ec2")
    assert len(ec2.describe_vpcs(Filters=T.filters(T.resource_tags("alice")))["Vpcs"]) == 1
    assert (
        len(ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [net.vpc_id]}])["Subnets"])
        == 12
    )


def test_tags_and_cidrs(ctx):
    net = network.ensure_network(ctx, "alice", zones=[f"{REGION}a", f"{REGION}c"])
    ec2 = ctx.client("ec2")
    vpc = ec2.describe_vpcs(VpcIds=[net.vpc_id])["Vpcs"][0]
    assert T.from_aws(vpc["Tags"])[T.MANAGED] == "true"
    assert T.from_aws(vpc["Tags"])[T.ACCOUNT] == "alice"
    assert T.from_aws(vpc["Tags"])["Name"] == "overcast-alice-vpc"
    tagged = {
        "igw": ec2.describe_internet_gateways(InternetGatewayIds=[net.igw_id])["InternetGateways"],
        "nat": ec2.describe_nat_gateways(NatGatewayIds=[net.nat_gateway_id])["NatGateways"],
        "eip": ec2.describe_addresses(Filters=T.filters(T.resource_tags("alice")))["Addresses"],
        "subnets": ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [net.vpc_id]}])[
            "Subnets"
        ],
    }
    for name, items in tagged.items():
        assert items, name
        for item in items:
            assert T.from_aws(item["Tags"])[T.ACCOUNT] == "alice", name
    cidrs = [ipaddress.ip_network(s["CidrBlock"]) for s in tagged["subnets"]]
    assert all(c.subnet_of(ipaddress.ip_network(vpc["CidrBlock"])) for c in cidrs)
    assert not any(a.overlaps(b) for i, a in enumerate(cidrs) for b in cidrs[i + 1 :])
    # The zone letter fixes the CIDRs: c is the third block.
    base = ipaddress.ip_network(vpc["CidrBlock"])
    by_id = {s["SubnetId"]: s["CidrBlock"] for s in tagged["subnets"]}
    assert by_id[net.public_subnets[f"{REGION}c"]] == str(list(base.subnets(new_prefix=20))[2])
    assert by_id[net.private_subnets[f"{REGION}c"]] == str(list(base.subnets(new_prefix=20))[10])


def test_public_subnets_map_public_ips_and_routes(ctx):
    net = network.ensure_network(ctx, "alice", zones=[f"{REGION}a", f"{REGION}b"])
    ec2 = ctx.client("ec2")
    subnets = {
        s["SubnetId"]: s
        for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [net.vpc_id]}])[
            "Subnets"
        ]
    }
    assert all(subnets[s]["MapPublicIpOnLaunch"] for s in net.public_subnets.values())
    assert not any(subnets[s]["MapPublicIpOnLaunch"] for s in net.private_subnets.values())

    def table(rt_id):
        rt = ec2.describe_route_tables(RouteTableIds=[rt_id])["RouteTables"][0]
        default = [r for r in rt["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
        return default, {a.get("SubnetId") for a in rt["Associations"]}

    routes, assoc = table(net.public_route_table_id)
    assert [r["GatewayId"] for r in routes] == [net.igw_id]
    assert assoc == set(net.public_subnets.values())
    routes, assoc = table(net.private_route_table_id)
    assert [r["NatGatewayId"] for r in routes] == [net.nat_gateway_id]
    assert assoc == set(net.private_subnets.values())
    igw = ec2.describe_internet_gateways(InternetGatewayIds=[net.igw_id])["InternetGateways"][0]
    assert igw["Attachments"][0]["VpcId"] == net.vpc_id
    nat = ec2.describe_nat_gateways(NatGatewayIds=[net.nat_gateway_id])["NatGateways"][0]
    assert nat["SubnetId"] == net.public_subnets[f"{REGION}a"]


def test_find_network(ctx):
    assert network.find_network(ctx, "alice") is None
    net = network.ensure_network(ctx, "alice", zones=[f"{REGION}a"])
    assert network.find_network(ctx, "alice") == net
    assert network.find_network(ctx, "bob") is None


def test_replaced_nat_gateway_is_routed_again(ctx):
    net = network.ensure_network(ctx, "alice", zones=[f"{REGION}a"])
    ctx.client("ec2").delete_nat_gateway(NatGatewayId=net.nat_gateway_id)
    again = network.ensure_network(ctx, "alice", zones=[f"{REGION}a"])
    assert again.nat_gateway_id != net.nat_gateway_id
    rt = ctx.client("ec2").describe_route_tables(RouteTableIds=[again.private_route_table_id])
    routes = [r for r in rt["RouteTables"][0]["Routes"] if r.get("NatGatewayId")]
    assert [r["NatGatewayId"] for r in routes] == [again.nat_gateway_id]


def test_ensure_zone_subnets(ctx):
    net = network.ensure_network(ctx, "alice", zones=[f"{REGION}a"])
    assert network.ensure_zone_subnets(ctx, net, "alice", f"{REGION}a") is net
    seen: list[network.Resource] = []
    wider = network.ensure_zone_subnets(ctx, net, "alice", f"{REGION}d", seen.append)
    assert sorted(wider.public_subnets) == [f"{REGION}a", f"{REGION}d"]
    assert [(r.kind, r.zone, r.state) for r in seen] == [
        ("subnet-public", f"{REGION}d", "created"),
        ("subnet-private", f"{REGION}d", "created"),
    ]
    assert network.find_network(ctx, "alice") == wider


def test_ensure_zone_subnets_without_setup_permissions(ctx):
    net = network.ensure_network(ctx, "alice", zones=[f"{REGION}a"])
    deny(ctx, "ec2", "CreateSubnet")
    with pytest.raises(PermissionMissing) as info:
        network.ensure_zone_subnets(ctx, net, "alice", f"{REGION}b")
    assert info.value.actions == ["ec2:CreateSubnet"]
    msg = str(info.value)
    assert f"{REGION}b" in msg and "setup" in msg and "ec2:CreateSubnet" in msg
    assert f"{REGION}a" in msg  # says which zones do work


def test_unsupported_zone_fails_before_creating(ctx):
    with pytest.raises(network.AwsError):
        network.ensure_network(ctx, "alice", zones=["us-east-1z"])
    assert network.find_network(ctx, "alice") is None


def test_teardown_network(ctx):
    network.ensure_network(ctx, "alice", zones=[f"{REGION}a", f"{REGION}b"])
    other = network.ensure_network(ctx, "bob", zones=[f"{REGION}a"])
    gone: list[network.Resource] = []
    network.teardown_network(ctx, "alice", gone.append)
    assert {r.state for r in gone} <= {"deleting", "deleted"}
    assert ("vpc", "deleted") in {(r.kind, r.state) for r in gone}
    assert network.find_network(ctx, "alice") is None
    ec2 = ctx.client("ec2")
    assert not ec2.describe_addresses(Filters=T.filters(T.resource_tags("alice")))["Addresses"]
    network.teardown_network(ctx, "alice")  # idempotent
    assert network.find_network(ctx, "bob") == other
