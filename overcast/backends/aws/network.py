"""An account's network: one VPC, a public and a private subnet per zone, IGW, one NAT gateway.

Everything is found by tags (and, for subnets, by VPC + zone + tier) before it is created, and
created with TagSpecifications so a resource never exists untagged: calling `ensure_network`
again after a crash at any point finishes the job without duplicates.
"""

from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from botocore.exceptions import ClientError

from ... import tags as T
from .errors import AwsError, PermissionMissing, code_of, permission_message, translate, wrap
from .session import AwsContext

TIER = "overcast:tier"  # "public" | "private" on subnets and route tables
ANYWHERE = "0.0.0.0/0"
MAX_ZONES = 8  # the /16 is cut into 16 /20s: 8 public + 8 private


@dataclass
class Resource:
    """One AWS resource, as reported to the reconciler while it works.

    state: "created" (made just now), "found" (already there), "deleting", "deleted".
    """

    kind: str
    aws_id: str
    zone: str | None = None
    state: str = "found"


Report = Callable[[Resource], None]


def noop(_: Resource) -> None:
    pass


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


def _vpc_cidr(owner: str) -> str:
    # Deterministic per owner, so two owners' VPCs rarely overlap if someone peers them.
    return f"10.{zlib.crc32(owner.encode()) % 256}.0.0/16"


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


_region_zones = zones  # ensure_network's parameter is also called `zones`


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


def _by_zone(subnets: list[dict], tier: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in sorted(subnets, key=lambda s: s["SubnetId"]):
        if T.from_aws(s.get("Tags")).get(TIER) == tier:
            out.setdefault(s["AvailabilityZone"], s["SubnetId"])
    return dict(sorted(out.items()))


@wrap
def find_network(ctx: AwsContext, owner: str) -> Network | None:
    """The owner's network as it is now, or None; uses only Describe* (the ongoing policy)."""
    ec2 = ctx.client("ec2")
    vpc = _find_vpc(ec2, owner)
    if vpc is None:
        return None
    igw, nat = _find_igw(ec2, owner), _find_nat(ec2, owner)
    public_rt = _find_route_table(ec2, vpc["VpcId"], "public")
    private_rt = _find_route_table(ec2, vpc["VpcId"], "private")
    subnets = _subnets(ec2, vpc["VpcId"])
    return Network(
        vpc_id=vpc["VpcId"],
        igw_id=igw["InternetGatewayId"] if igw else None,
        nat_gateway_id=nat["NatGatewayId"] if nat else None,
        public_subnets=_by_zone(subnets, "public"),
        private_subnets=_by_zone(subnets, "private"),
        public_route_table_id=public_rt["RouteTableId"] if public_rt else None,
        private_route_table_id=private_rt["RouteTableId"] if private_rt else None,
        cidr=vpc["CidrBlock"],
    )


# ---------------------------------------------------------------- ensure (setup policy)


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


def _subnet_zone(ec2: Any, subnet_id: str) -> str:
    return ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]["AvailabilityZone"]


@wrap
def ensure_network(
    ctx: AwsContext, owner: str, zones: list[str] | None = None, report: Report = noop
) -> Network:
    """Create (or find) the owner's whole network; returns it complete. Needs the setup policy."""
    ec2 = ctx.client("ec2")
    wanted = sorted(zones) if zones else _region_zones(ctx)
    for zone in wanted:
        zone_index(zone)  # fail before creating anything if a zone is unusable
    vpc = _ensure_vpc(ec2, owner, report)
    igw_id = _ensure_igw(ec2, owner, vpc["VpcId"], report)
    public_rt = _ensure_route_table(ec2, owner, vpc["VpcId"], "public", report)
    _ensure_default_route(ec2, public_rt["RouteTableId"], "GatewayId", igw_id)
    private_rt = _ensure_route_table(ec2, owner, vpc["VpcId"], "private", report)
    public: dict[str, str] = {}
    private: dict[str, str] = {}
    for zone in wanted:
        public[zone] = _ensure_subnet(
            ec2, owner, vpc, zone, "public", public_rt["RouteTableId"], report
        )
        private[zone] = _ensure_subnet(
            ec2, owner, vpc, zone, "private", private_rt["RouteTableId"], report
        )
    nat_id = _ensure_nat(ec2, owner, public[wanted[0]], report)
    _ensure_default_route(ec2, private_rt["RouteTableId"], "NatGatewayId", nat_id)
    # Keep subnets of zones made earlier (e.g. by ensure_zone_subnets) in the answer too.
    subnets = _subnets(ec2, vpc["VpcId"])
    return Network(
        vpc_id=vpc["VpcId"],
        igw_id=igw_id,
        nat_gateway_id=nat_id,
        public_subnets={**_by_zone(subnets, "public"), **public},
        private_subnets={**_by_zone(subnets, "private"), **private},
        public_route_table_id=public_rt["RouteTableId"],
        private_route_table_id=private_rt["RouteTableId"],
        cidr=vpc["CidrBlock"],
    )


@wrap
def ensure_zone_subnets(
    ctx: AwsContext, network: Network, owner: str, zone: str, report: Report = noop
) -> Network:
    """Make sure `zone` has both subnets; creating one needs the setup policy."""
    if zone in network.public_subnets and zone in network.private_subnets:
        return network
    ec2 = ctx.client("ec2")
    vpc = ec2.describe_vpcs(VpcIds=[network.vpc_id])["Vpcs"][0]
    public_rt = network.public_route_table_id or _route_table_id(ec2, network.vpc_id, "public")
    private_rt = network.private_route_table_id or _route_table_id(ec2, network.vpc_id, "private")
    try:
        pub = _ensure_subnet(ec2, owner, vpc, zone, "public", public_rt, report)
        priv = _ensure_subnet(ec2, owner, vpc, zone, "private", private_rt, report)
    except ClientError as exc:
        if code_of(exc) in {"UnauthorizedOperation", "AccessDenied"}:
            denied = translate(exc)
            actions = denied.actions if isinstance(denied, PermissionMissing) else []
            raise PermissionMissing(
                permission_message(
                    actions,
                    f"Zone {zone} has no overcast subnet yet, and it cannot be created without "
                    "the setup permissions (attach the setup policy again, or pick a zone that "
                    f"has one: {', '.join(sorted(network.public_subnets)) or 'none'})",
                ),
                actions,
                code=code_of(exc),
            ) from exc
        raise
    return replace(
        network,
        public_subnets=dict(sorted({**network.public_subnets, zone: pub}.items())),
        private_subnets=dict(sorted({**network.private_subnets, zone: priv}.items())),
        public_route_table_id=public_rt,
        private_route_table_id=private_rt,
    )


def _route_table_id(ec2: Any, vpc_id: str, tier: str) -> str:
    rt = _find_route_table(ec2, vpc_id, tier)
    if rt is None:
        raise AwsError(f"The network {vpc_id} has no {tier} route table; set the backend up again.")
    return rt["RouteTableId"]


# Re-exported: teardown lives in its own module to keep this one short.
from .network_teardown import teardown_network  # noqa: E402

__all__ = [
    "Network",
    "Resource",
    "ensure_network",
    "ensure_zone_subnets",
    "find_network",
    "noop",
    "teardown_network",
    "zones",
]
