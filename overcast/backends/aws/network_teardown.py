"""Deleting an account's network, in dependency order (needs the setup policy)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from ... import tags as T
from .errors import AwsError, code_of, wrap
from .network_lookup import (
    TIER,
    Report,
    Resource,
    _find_igw,
    _find_nats,
    _find_vpc,
    _subnets,
    _tagged,
    noop,
)
from .session import AwsContext


def _ignore_missing(exc: ClientError) -> None:
    if not code_of(exc).endswith(".NotFound") and "NotFound" not in code_of(exc):
        raise exc


@wrap
def teardown_network(ctx: AwsContext, owner: str, report: Report = noop) -> None:
    """Delete the owner's network in dependency order. Instances must be gone first.

    Raises a retryable AwsError while something (an instance's network interface) still uses a
    subnet; calling again later finishes the job.
    """
    ec2 = ctx.client("ec2")
    nats = _find_nats(ec2, owner, ["pending", "available", "deleting"])
    for nat in nats:
        if nat["State"] != "deleting":
            ec2.delete_nat_gateway(NatGatewayId=nat["NatGatewayId"])
        report(Resource("nat-gateway", nat["NatGatewayId"], None, "deleting"))
    if nats:
        # The NAT holds the elastic IP and an interface in a subnet until it is gone.
        ec2.get_waiter("nat_gateway_deleted").wait(
            NatGatewayIds=[n["NatGatewayId"] for n in nats],
            WaiterConfig={"Delay": 5, "MaxAttempts": 60},
        )
        for nat in nats:
            report(Resource("nat-gateway", nat["NatGatewayId"], None, "deleted"))
    addrs = ec2.describe_addresses(Filters=T.filters(T.resource_tags(owner)))["Addresses"]
    for addr in _tagged(addrs, owner):
        try:
            ec2.release_address(AllocationId=addr["AllocationId"])
        except ClientError as exc:
            _ignore_missing(exc)
        report(Resource("elastic-ip", addr["AllocationId"], None, "deleted"))
    vpc = _find_vpc(ec2, owner)
    if vpc is not None:
        _teardown_vpc(ec2, owner, vpc["VpcId"], report)


def _teardown_vpc(ec2: Any, owner: str, vpc_id: str, report: Report) -> None:
    for subnet in _subnets(ec2, vpc_id):
        tier = T.from_aws(subnet.get("Tags")).get(TIER, "private")
        try:
            ec2.delete_subnet(SubnetId=subnet["SubnetId"])
        except ClientError as exc:
            if code_of(exc) == "DependencyViolation":
                raise _still_in_use(f"subnet {subnet['SubnetId']}") from exc
            _ignore_missing(exc)
        report(
            Resource(f"subnet-{tier}", subnet["SubnetId"], subnet["AvailabilityZone"], "deleted")
        )
    rts = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])
    for rt in rts["RouteTables"]:
        if any(a.get("Main") for a in rt.get("Associations", [])):
            continue  # the main table goes with the VPC
        for assoc in rt.get("Associations", []):
            ec2.disassociate_route_table(AssociationId=assoc["RouteTableAssociationId"])
        ec2.delete_route_table(RouteTableId=rt["RouteTableId"])
        report(Resource("route-table", rt["RouteTableId"], None, "deleted"))
    igws = ec2.describe_internet_gateways(
        Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}]
    )["InternetGateways"]
    igw_ids = {g["InternetGatewayId"] for g in igws}
    tagged = _find_igw(ec2, owner)
    if tagged is not None:
        igw_ids.add(tagged["InternetGatewayId"])
    for igw_id in sorted(igw_ids):
        try:
            ec2.detach_internet_gateway(InternetGatewayId=igw_id, VpcId=vpc_id)
        except ClientError as exc:
            if code_of(exc) not in {"Gateway.NotAttached"}:
                _ignore_missing(exc)
        ec2.delete_internet_gateway(InternetGatewayId=igw_id)
        report(Resource("internet-gateway", igw_id, None, "deleted"))
    try:
        ec2.delete_vpc(VpcId=vpc_id)
    except ClientError as exc:
        if code_of(exc) == "DependencyViolation":
            raise _still_in_use(f"VPC {vpc_id}") from exc
        raise
    report(Resource("vpc", vpc_id, None, "deleted"))


def _still_in_use(what: str) -> AwsError:
    err = AwsError(
        f"The {what} is still in use (instances shutting down, or resources overcast did not "
        "create). Overcast will try again; if it persists, delete what remains in that VPC."
    )
    err.retryable = True
    return err
