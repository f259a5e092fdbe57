"""Zones and subnets: which zones a region offers, each zone's fixed public/private CIDRs, and
finding or creating one zone's subnet (associated with its tier's route table)."""

from __future__ import annotations

import ipaddress
from typing import Any

from ... import tags as T
from .errors import AwsError, wrap
from .network_lookup import MAX_ZONES, TIER, Report, Resource, _owner_tags, _tag_spec
from .session import AwsContext


def zone_index(zone: str) -> int:
    """a -> 0, b -> 1, ...: the zone's letter fixes its subnets' CIDRs forever."""
    letter = zone[-1]
    index = ord(letter) - ord("a")
    if not zone[-1].isalpha() or not 0 <= index < MAX_ZONES:
        raise AwsError(f"Zone {zone} is not supported (only zones a to h of a region).")
    return index


def subnet_cidr(vpc_cidr: str, zone: str, tier: str) -> str:
    blocks = list(ipaddress.ip_network(vpc_cidr).subnets(new_prefix=20))
    offset = 0 if tier == "public" else MAX_ZONES
    return str(blocks[offset + zone_index(zone)])


@wrap
def zones(ctx: AwsContext) -> list[str]:
    """The region's available availability zones (not Local/Wavelength zones), sorted."""
    resp = ctx.client("ec2").describe_availability_zones(
        Filters=[{"Name": "state", "Values": ["available"]}]
    )
    return sorted(
        z["ZoneName"]
        for z in resp["AvailabilityZones"]
        if z.get("ZoneType", "availability-zone") == "availability-zone"
    )


def _ensure_subnet(
    ec2: Any, owner: str, vpc: dict, zone: str, tier: str, rt_id: str, report: Report
) -> str:
    found = ec2.describe_subnets(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc["VpcId"]]},
            {"Name": "availability-zone", "Values": [zone]},
            {"Name": f"tag:{TIER}", "Values": [tier]},
        ]
    )["Subnets"]
    found = [
        s
        for s in found
        if s["AvailabilityZone"] == zone and T.from_aws(s.get("Tags")).get(TIER) == tier
    ]
    kind = f"subnet-{tier}"
    if found:
        subnet = min(found, key=lambda s: s["SubnetId"])
        state = "found"
    else:
        subnet = ec2.create_subnet(
            VpcId=vpc["VpcId"],
            CidrBlock=subnet_cidr(vpc["CidrBlock"], zone, tier),
            AvailabilityZone=zone,
            TagSpecifications=_tag_spec(
                "subnet", _owner_tags(owner, f"{tier}-{zone}", **{TIER: tier})
            ),
        )["Subnet"]
        state = "created"
    subnet_id = subnet["SubnetId"]
    # Schedulers live in public subnets and must be reachable by clients.
    if tier == "public" and not subnet.get("MapPublicIpOnLaunch"):
        ec2.modify_subnet_attribute(SubnetId=subnet_id, MapPublicIpOnLaunch={"Value": True})
    rt = ec2.describe_route_tables(RouteTableIds=[rt_id])["RouteTables"][0]
    if subnet_id not in {a.get("SubnetId") for a in rt.get("Associations", [])}:
        ec2.associate_route_table(RouteTableId=rt_id, SubnetId=subnet_id)
    report(Resource(kind, subnet_id, zone, state))
    return subnet_id
