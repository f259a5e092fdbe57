"""What the network modules share: the report and `Network` types, tag helpers, and the
Describe*-only look-ups (all the ongoing policy allows), used by ensure, find and teardown."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ... import tags as T
from ..base import Report, Resource, noop  # noqa: F401 (re-exported)

TIER = "overcast:tier"  # "public" | "private" on subnets and route tables
ANYWHERE = "0.0.0.0/0"
MAX_ZONES = 8  # the /16 is cut into 16 /20s: 8 public + 8 private


@dataclass
class Network:
    vpc_id: str
    igw_id: str | None
    nat_gateway_id: str | None
    public_subnets: dict[str, str] = field(default_factory=dict)
    private_subnets: dict[str, str] = field(default_factory=dict)
    public_route_table_id: str | None = None
    private_route_table_id: str | None = None
    cidr: str | None = None


def _tag_spec(resource_type: str, tags: dict[str, str]) -> list[dict[str, Any]]:
    return [{"ResourceType": resource_type, "Tags": T.as_aws(tags)}]


def _owner_tags(owner: str, name: str, **extra: str) -> dict[str, str]:
    return T.resource_tags(owner, Name=f"overcast-{owner}-{name}", **extra)


# ---------------------------------------------------------------- look-ups (Describe* only)


def _tagged(items: list[dict], owner: str, **extra: str) -> list[dict]:
    """Keep only items carrying the owner's tags: the server-side tag filter is only a hint
    (moto ignores it on NAT gateways, and we never want to touch another owner's resource)."""
    wanted = {**T.resource_tags(owner), **extra}
    return [i for i in items if wanted.items() <= T.from_aws(i.get("Tags")).items()]


def _find_vpc(ec2: Any, owner: str) -> dict | None:
    vpcs = _tagged(ec2.describe_vpcs(Filters=T.filters(T.resource_tags(owner)))["Vpcs"], owner)
    # Two VPCs would only come from a race; always pick the same one.
    return min(vpcs, key=lambda v: v["VpcId"]) if vpcs else None


def _find_igw(ec2: Any, owner: str) -> dict | None:
    igws = ec2.describe_internet_gateways(Filters=T.filters(T.resource_tags(owner)))
    found = _tagged(igws["InternetGateways"], owner)
    return min(found, key=lambda g: g["InternetGatewayId"]) if found else None


def _find_route_table(ec2: Any, vpc_id: str, tier: str) -> dict | None:
    rts = ec2.describe_route_tables(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": f"tag:{TIER}", "Values": [tier]}]
    )["RouteTables"]
    rts = [r for r in rts if r["VpcId"] == vpc_id and T.from_aws(r.get("Tags")).get(TIER) == tier]
    return min(rts, key=lambda r: r["RouteTableId"]) if rts else None


def _find_nats(ec2: Any, owner: str, states: list[str]) -> list[dict]:
    nats = ec2.describe_nat_gateways(
        Filter=T.filters(T.resource_tags(owner)) + [{"Name": "state", "Values": states}]
    )["NatGateways"]
    return sorted(
        (n for n in _tagged(nats, owner) if n["State"] in states), key=lambda n: n["NatGatewayId"]
    )


def _find_nat(ec2: Any, owner: str) -> dict | None:
    nats = _find_nats(ec2, owner, ["pending", "available"])
    return nats[0] if nats else None


def _find_eip(ec2: Any, owner: str) -> dict | None:
    """A tagged elastic IP that is free (an address still held by a deleted NAT is skipped)."""
    addrs = _tagged(
        ec2.describe_addresses(Filters=T.filters(T.resource_tags(owner)))["Addresses"], owner
    )
    free = [a for a in addrs if not a.get("AssociationId")]
    return min(free, key=lambda a: a["AllocationId"]) if free else None


def _subnets(ec2: Any, vpc_id: str) -> list[dict]:
    pages = ec2.get_paginator("describe_subnets").paginate(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}]
    )
    return [s for page in pages for s in page["Subnets"]]


def _subnet_zone(ec2: Any, subnet_id: str) -> str:
    return ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]["AvailabilityZone"]


def _by_zone(subnets: list[dict], tier: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in sorted(subnets, key=lambda s: s["SubnetId"]):
        if T.from_aws(s.get("Tags")).get(TIER) == tier:
            out.setdefault(s["AvailabilityZone"], s["SubnetId"])
    return dict(sorted(out.items()))
