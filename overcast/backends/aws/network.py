"""An account's network: one VPC, a public and a private subnet per zone, IGW, one NAT gateway.

Everything is found by tags (and, for subnets, by VPC + zone + tier) before it is created, and
created with TagSpecifications so a resource never exists untagged: calling `ensure_network`
again after a crash at any point finishes the job without duplicates.

This module puts the pieces together; they live in network_lookup.py (types, Describe*
look-ups), network_gateways.py (VPC, IGW, routes, NAT), network_subnets.py (zones, subnets) and
network_teardown.py. The names other modules use are re-exported here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from botocore.exceptions import ClientError

from .errors import AwsError, PermissionMissing, code_of, permission_message, translate, wrap
from .network_gateways import (
    _ensure_default_route,
    _ensure_igw,
    _ensure_nat,
    _ensure_route_table,
    _ensure_vpc,
)
from .network_lookup import (
    ANYWHERE,
    MAX_ZONES,
    TIER,
    Network,
    Report,
    Resource,
    _by_zone,
    _find_igw,
    _find_nat,
    _find_route_table,
    _find_vpc,
    _subnets,
    noop,
)
from .network_subnets import _ensure_subnet, subnet_cidr, zone_index, zones
from .network_teardown import teardown_network
from .session import AwsContext

_region_zones = zones  # ensure_network's parameter is also called `zones`


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


__all__ = [
    "ANYWHERE",
    "MAX_ZONES",
    "TIER",
    "AwsError",
    "Network",
    "Report",
    "Resource",
    "ensure_network",
    "ensure_zone_subnets",
    "find_network",
    "noop",
    "subnet_cidr",
    "teardown_network",
    "zone_index",
    "zones",
]
