"""The account network's single pieces: VPC, internet gateway, route tables and their default
routes, elastic IP + NAT gateway. Each is found (by tags) before it is created, so a rerun after
a crash completes the job without duplicates (setup policy)."""

from __future__ import annotations

import zlib
from typing import Any

from .network_lookup import (
    ANYWHERE,
    TIER,
    Report,
    Resource,
    _find_eip,
    _find_igw,
    _find_nat,
    _find_route_table,
    _find_vpc,
    _owner_tags,
    _subnet_zone,
    _tag_spec,
)


def _vpc_cidr(owner: str) -> str:
    # Deterministic per owner, so two owners' VPCs rarely overlap if someone peers them.
    return f"10.{zlib.crc32(owner.encode()) % 256}.0.0/16"


def _ensure_vpc(ec2: Any, owner: str, report: Report) -> dict:
    vpc = _find_vpc(ec2, owner)
    if vpc is not None:
        report(Resource("vpc", vpc["VpcId"], None, "found"))
        return vpc
    vpc = ec2.create_vpc(
        CidrBlock=_vpc_cidr(owner), TagSpecifications=_tag_spec("vpc", _owner_tags(owner, "vpc"))
    )["Vpc"]
    report(Resource("vpc", vpc["VpcId"], None, "created"))
    return vpc


def _ensure_igw(ec2: Any, owner: str, vpc_id: str, report: Report) -> str:
    igw = _find_igw(ec2, owner)
    state = "found"
    if igw is None:
        igw = ec2.create_internet_gateway(
            TagSpecifications=_tag_spec("internet-gateway", _owner_tags(owner, "igw"))
        )["InternetGateway"]
        state = "created"
    igw_id = igw["InternetGatewayId"]
    if vpc_id not in {a["VpcId"] for a in igw.get("Attachments", [])}:
        ec2.attach_internet_gateway(InternetGatewayId=igw_id, VpcId=vpc_id)
    report(Resource("internet-gateway", igw_id, None, state))
    return igw_id


def _ensure_route_table(ec2: Any, owner: str, vpc_id: str, tier: str, report: Report) -> dict:
    rt = _find_route_table(ec2, vpc_id, tier)
    if rt is not None:
        report(Resource("route-table", rt["RouteTableId"], None, "found"))
        return rt
    rt = ec2.create_route_table(
        VpcId=vpc_id,
        TagSpecifications=_tag_spec(
            "route-table", _owner_tags(owner, f"{tier}-rt", **{TIER: tier})
        ),
    )["RouteTable"]
    report(Resource("route-table", rt["RouteTableId"], None, "created"))
    return rt


def _ensure_default_route(ec2: Any, rt_id: str, target_key: str, target: str) -> None:
    """0.0.0.0/0 -> target; replaces a route left pointing at a deleted (blackhole) target."""
    rt = ec2.describe_route_tables(RouteTableIds=[rt_id])["RouteTables"][0]
    for route in rt.get("Routes", []):
        if route.get("DestinationCidrBlock") != ANYWHERE:
            continue
        if route.get(target_key) == target and route.get("State") != "blackhole":
            return
        ec2.replace_route(RouteTableId=rt_id, DestinationCidrBlock=ANYWHERE, **{target_key: target})
        return
    ec2.create_route(RouteTableId=rt_id, DestinationCidrBlock=ANYWHERE, **{target_key: target})


def _ensure_nat(ec2: Any, owner: str, subnet_id: str, report: Report) -> str:
    nat = _find_nat(ec2, owner)
    if nat is not None:
        eip_id = (nat.get("NatGatewayAddresses") or [{}])[0].get("AllocationId", "")
        report(Resource("elastic-ip", eip_id or "?", None, "found"))
        report(Resource("nat-gateway", nat["NatGatewayId"], nat.get("SubnetId"), "found"))
        nat_id = nat["NatGatewayId"]
    else:
        eip = _find_eip(ec2, owner)
        if eip is None:
            eip = ec2.allocate_address(
                Domain="vpc",
                TagSpecifications=_tag_spec("elastic-ip", _owner_tags(owner, "nat-ip")),
            )
            report(Resource("elastic-ip", eip["AllocationId"], None, "created"))
        else:
            report(Resource("elastic-ip", eip["AllocationId"], None, "found"))
        zone = _subnet_zone(ec2, subnet_id)
        nat = ec2.create_nat_gateway(
            SubnetId=subnet_id,
            AllocationId=eip["AllocationId"],
            # One token per address: a retry after a crash returns the same gateway on AWS.
            ClientToken=f"overcast-nat-{eip['AllocationId']}",
            TagSpecifications=_tag_spec("natgateway", _owner_tags(owner, "nat")),
        )["NatGateway"]
        nat_id = nat["NatGatewayId"]
        report(Resource("nat-gateway", nat_id, zone, "created"))
    if nat.get("State") != "available":
        # A NAT gateway takes a minute or two on AWS; routes to it need it available.
        ec2.get_waiter("nat_gateway_available").wait(
            NatGatewayIds=[nat_id], WaiterConfig={"Delay": 5, "MaxAttempts": 60}
        )
    return nat_id
