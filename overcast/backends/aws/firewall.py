"""One security group per cluster: the configured ports from the configured CIDR, plus all
traffic between the cluster's own machines (workers <-> scheduler)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from ... import tags as T
from .errors import AwsError, code_of, wrap
from .network import Report, Resource, noop
from .session import AwsContext

# A rule as a comparable tuple: (protocol, from_port, to_port, source kind, source)
Rule = tuple[str, int, int, str, str]


@dataclass
class SecurityGroupInfo:
    group_id: str
    name: str
    vpc_id: str
    tags: dict[str, str]


def group_name(account: str, cluster_name: str, cluster_id: int) -> str:
    return f"overcast-{account}-{cluster_name}-{cluster_id}"[:255]


def _wanted(group_id: str, ports: list[int], cidr: str) -> set[Rule]:
    kind = "cidr6" if ":" in cidr else "cidr"
    rules: set[Rule] = {("tcp", int(p), int(p), kind, cidr) for p in ports}
    rules.add(("-1", -1, -1, "group", group_id))
    return rules


def _rule_of(r: dict[str, Any]) -> Rule:
    proto = str(r["IpProtocol"])
    ports = (-1, -1) if proto == "-1" else (int(r.get("FromPort", -1)), int(r.get("ToPort", -1)))
    if r.get("CidrIpv4"):
        source = ("cidr", r["CidrIpv4"])
    elif r.get("CidrIpv6"):
        source = ("cidr6", r["CidrIpv6"])
    elif r.get("ReferencedGroupInfo", {}).get("GroupId"):
        source = ("group", r["ReferencedGroupInfo"]["GroupId"])
    else:
        source = ("other", r.get("PrefixListId", "?"))
    return (proto, *ports, *source)


def _permission(rule: Rule) -> dict[str, Any]:
    proto, from_port, to_port, kind, source = rule
    perm: dict[str, Any] = {"IpProtocol": proto}
    if proto != "-1":
        perm.update(FromPort=from_port, ToPort=to_port)
    if kind == "cidr":
        perm["IpRanges"] = [{"CidrIp": source}]
    elif kind == "cidr6":
        perm["Ipv6Ranges"] = [{"CidrIpv6": source}]
    elif kind == "group":
        perm["UserIdGroupPairs"] = [{"GroupId": source}]
    else:
        perm["PrefixListIds"] = [{"PrefixListId": source}]
    return perm


def _ingress_rules(ec2: Any, group_id: str) -> set[Rule]:
    # The authorize response lists only one rule on moto, so always read the group back.
    pages = ec2.get_paginator("describe_security_group_rules").paginate(
        Filters=[{"Name": "group-id", "Values": [group_id]}]
    )
    return {_rule_of(r) for page in pages for r in page["SecurityGroupRules"] if not r["IsEgress"]}


def _find(ec2: Any, tags: dict[str, str], vpc_id: str | None = None) -> list[dict]:
    filters = T.filters(tags)
    if vpc_id:
        filters.append({"Name": "vpc-id", "Values": [vpc_id]})
    pages = ec2.get_paginator("describe_security_groups").paginate(Filters=filters)
    # The server-side filter is a hint; only groups carrying every wanted tag are ours.
    found = (g for page in pages for g in page["SecurityGroups"]
             if tags.items() <= T.from_aws(g.get("Tags")).items())
    return sorted(found, key=lambda g: g["GroupId"])


@wrap
def ensure_cluster_security_group(
    ctx: AwsContext,
    vpc_id: str,
    account: str,
    cluster_id: int,
    cluster_name: str,
    ports: list[int],
    cidr: str,
    report: Report = noop,
) -> str:
    """Find or create the cluster's group and make its ingress rules exactly the wanted ones."""
    ec2 = ctx.client("ec2")
    tags = T.resource_tags(account, cluster_id)
    name = group_name(account, cluster_name, cluster_id)
    found = _find(ec2, tags, vpc_id)
    state = "found"
    if found:
        group_id = found[0]["GroupId"]
    else:
        try:
            group_id = ec2.create_security_group(
                GroupName=name,
                Description=f"overcast cluster {cluster_name} ({cluster_id}) of {account}",
                VpcId=vpc_id,
                TagSpecifications=[
                    {"ResourceType": "security-group", "Tags": T.as_aws({**tags, "Name": name})}
                ],
            )["GroupId"]
            state = "created"
        except ClientError as exc:
            if code_of(exc) != "InvalidGroup.Duplicate":
                raise
            group = ec2.describe_security_groups(
                Filters=[
                    {"Name": "group-name", "Values": [name]},
                    {"Name": "vpc-id", "Values": [vpc_id]},
                ]
            )["SecurityGroups"][0]
            if not T.ours(group.get("Tags")):  # same name, someone else's: never adopt it
                raise AwsError(
                    f"A security group named {name!r} already exists in {vpc_id} and was not "
                    "created by this overcast control plane. Delete or rename it."
                ) from exc
            group_id = group["GroupId"]
    wanted = _wanted(group_id, ports, cidr)
    have = _ingress_rules(ec2, group_id)
    missing, extra = wanted - have, have - wanted
    if missing:
        ec2.authorize_security_group_ingress(
            GroupId=group_id, IpPermissions=[_permission(r) for r in sorted(missing)]
        )
    if extra:
        # Level-triggered: the group converges to the cluster's firewall settings.
        ec2.revoke_security_group_ingress(
            GroupId=group_id, IpPermissions=[_permission(r) for r in sorted(extra)]
        )
    report(Resource("security-group", group_id, None, state))
    return group_id


@wrap
def list_cluster_security_groups(ctx: AwsContext, cluster_id: int) -> list[SecurityGroupInfo]:
    ec2 = ctx.client("ec2")
    return [_info(g) for g in _find(ec2, T.cluster_filter(cluster_id))]


def _info(g: dict) -> SecurityGroupInfo:
    return SecurityGroupInfo(
        g["GroupId"], g["GroupName"], g.get("VpcId", ""), T.from_aws(g.get("Tags"))
    )


def delete_groups(ctx: AwsContext, tags: dict[str, str], report: Report = noop) -> list[str]:
    """Delete the groups carrying `tags`; returns the ids that are still in use (try later)."""
    ec2 = ctx.client("ec2")
    remaining: list[str] = []
    for group in _find(ec2, tags):
        try:
            ec2.delete_security_group(GroupId=group["GroupId"])
        except ClientError as exc:
            code = code_of(exc)
            if code == "DependencyViolation":
                # Instances still shutting down hold on to the group; the next pass retries.
                remaining.append(group["GroupId"])
                report(Resource("security-group", group["GroupId"], None, "deleting"))
                continue
            if code != "InvalidGroup.NotFound":
                raise
        report(Resource("security-group", group["GroupId"], None, "deleted"))
    return remaining


@wrap
def delete_cluster_security_groups(
    ctx: AwsContext, cluster_id: int, account: str | None = None, report: Report = noop
) -> list[str]:
    """Delete the cluster's groups. Returns the ids still in use by instances that are shutting
    down (DependencyViolation): empty means done, otherwise call again on a later pass."""
    tags = T.cluster_filter(cluster_id)
    if account is not None:
        tags[T.ACCOUNT] = account
    return delete_groups(ctx, tags, report)
