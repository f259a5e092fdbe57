"""What AWS authorises for each call overcast makes, and a small IAM evaluator for it.

moto evaluates no conditions, so the tests evaluate them here: every call the code sends is
recorded (operation + parameters) and turned into the authorisation requests AWS makes for it
(action, resource ARN, condition context, as the Service Authorization Reference lists them),
with the resource tags looked up at the moment of the call. `allowed` then evaluates the
policy documents (Allow statements, Action/Resource globs, StringEquals/StringLike/ArnLike).
What this model does not cover is listed in overcast/backends/aws/policies/README.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

Tags = dict[str, str]
TagsOf = Callable[[str, str], Tags]  # (kind, id) -> tags, read at the time of the call


@dataclass
class Auth:
    action: str
    resource: str
    context: dict[str, Any] = field(default_factory=dict)
    call: str = ""


def _list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _cond(op: str, key: str, wanted: Any, context: dict[str, Any]) -> bool:
    lowered = {k.lower(): v for k, v in context.items()}
    if key.lower() not in lowered:
        return False  # AWS: a condition on a key the request does not have does not match
    have = lowered[key.lower()]
    for value in _list(wanted):
        if op == "StringEquals" and have == value:
            return True
        if op in ("StringLike", "ArnLike") and fnmatchcase(have, value):
            return True
    if op not in ("StringEquals", "StringLike", "ArnLike"):
        raise AssertionError(f"the evaluator does not know the operator {op}")
    return False


def allowed(docs: list[dict], auth: Auth) -> bool:
    for doc in docs:
        for st in doc["Statement"]:
            if st["Effect"] != "Allow":
                continue
            if not any(fnmatchcase(auth.action, a) for a in _list(st["Action"])):
                continue
            if not any(fnmatchcase(auth.resource, r) for r in _list(st["Resource"])):
                continue
            conds = st.get("Condition", {})
            if all(_cond(op, k, v, auth.context) for op, kv in conds.items()
                   for k, v in kv.items()):
                return True
    return False


def _request_tags(tags: Tags) -> dict[str, str]:
    return {f"aws:RequestTag/{k}": v for k, v in tags.items()}


def _resource_tags(tags: Tags) -> dict[str, str]:
    return {f"aws:ResourceTag/{k}": v for k, v in tags.items()}


def _spec_tags(params: dict, kind: str) -> Tags:
    for spec in params.get("TagSpecifications", []):
        if spec["ResourceType"] == kind:
            return {t["Key"]: t["Value"] for t in spec["Tags"]}
    return {}


# Resource type -> the id parameter that names it in EC2 calls.
EC2_IDS = {"vpc": "VpcId", "subnet": "SubnetId", "internet-gateway": "InternetGatewayId",
           "route-table": "RouteTableId", "natgateway": "NatGatewayId",
           "elastic-ip": "AllocationId", "security-group": "GroupId"}
# Create call -> (new resource type, existing resources it names)
EC2_CREATES = {"CreateVpc": ("vpc", ()), "CreateInternetGateway": ("internet-gateway", ()),
               "CreateRouteTable": ("route-table", ("vpc",)),
               "CreateSubnet": ("subnet", ("vpc",)), "AllocateAddress": ("elastic-ip", ()),
               "CreateNatGateway": ("natgateway", ("subnet", "elastic-ip")),
               "CreateSecurityGroup": ("security-group", ("vpc",))}
# Calls on existing resources -> the resource types they name.
EC2_USES = {"AttachInternetGateway": ("internet-gateway", "vpc"),
            "DetachInternetGateway": ("internet-gateway", "vpc"),
            "DeleteInternetGateway": ("internet-gateway",), "DeleteVpc": ("vpc",),
            "CreateRoute": ("route-table",), "ReplaceRoute": ("route-table",),
            "AssociateRouteTable": ("route-table", "subnet"), "DeleteRouteTable": ("route-table",),
            "ModifySubnetAttribute": ("subnet",), "DeleteSubnet": ("subnet",),
            "DeleteNatGateway": ("natgateway",), "ReleaseAddress": ("elastic-ip",),
            "DeleteSecurityGroup": ("security-group",),
            "AuthorizeSecurityGroupIngress": ("security-group",),
            "RevokeSecurityGroupIngress": ("security-group",)}


def authorisations(service: str, op: str, params: dict, region: str, account: str,
                   tags_of: TagsOf) -> Iterator[Auth]:
    call = f"{service}:{op}"
    if service == "ec2":
        yield from _ec2(op, params, f"arn:aws:ec2:{region}:{account}", tags_of, call)
    elif service == "iam":
        yield from _iam(op, params, account, tags_of, call)
    elif service == "logs":
        group = params.get("logGroupName")
        base = f"arn:aws:logs:{region}:{account}:log-group:"
        if op == "DescribeLogGroups":
            yield Auth(call, "*", call=call)
        elif params.get("resourceArn"):
            yield Auth(call, params["resourceArn"], call=call)
        elif params.get("logStreamName"):
            yield Auth(call, f"{base}{group}:log-stream:{params['logStreamName']}", call=call)
        else:
            yield Auth(call, f"{base}{group}", call=call)
            if params.get("tags"):
                yield Auth("logs:TagResource", f"{base}{group}", call=call)
    elif service == "ecr":
        for name in params.get("repositoryNames") or [params.get("repositoryName")]:
            arn = params.get("resourceArn") or f"arn:aws:ecr:{region}:{account}:repository/{name}"
            yield Auth(call, arn, call=call)
            if params.get("tags"):
                yield Auth("ecr:TagResource", arn, call=call)
    elif service != "sts":
        raise AssertionError(f"no authorisation model for {call}")


def _ec2(op: str, params: dict, base: str, tags_of: TagsOf, call: str) -> Iterator[Auth]:
    action = f"ec2:{op}"
    if op.startswith("Describe"):
        yield Auth(action, "*", call=call)
    elif op == "RunInstances":
        for kind in ("instance", "volume", "network-interface"):
            yield Auth(action, f"{base}:{kind}/*", _request_tags(_spec_tags(params, kind)), call)
        for sg in params.get("SecurityGroupIds", []):
            yield Auth(action, f"{base}:security-group/{sg}",
                       _resource_tags(tags_of("ec2", sg)), call)
        subnet = params["SubnetId"]
        yield Auth(action, f"{base}:subnet/{subnet}", _resource_tags(tags_of("ec2", subnet)), call)
        region = base.split(":")[3]
        yield Auth(action, f"arn:aws:ec2:{region}::image/{params['ImageId']}", call=call)
        if params.get("InstanceMarketOptions"):
            yield Auth(action, f"{base}:spot-instances-request/*", call=call)
        yield from _tag_on_create(op, params, base, call)
        if params.get("IamInstanceProfile"):
            role = tags_of("profile-role", params["IamInstanceProfile"]["Name"])["role"]
            account = base.split(":")[4]
            yield Auth("iam:PassRole", f"arn:aws:iam::{account}:role/{role}",
                       {"iam:PassedToService": "ec2.amazonaws.com"}, call)
    elif op == "TerminateInstances":
        for iid in params["InstanceIds"]:
            yield Auth(action, f"{base}:instance/{iid}", _resource_tags(tags_of("ec2", iid)), call)
    elif op in EC2_CREATES:
        kind, uses = EC2_CREATES[op]
        spec = _spec_tags(params, kind)
        yield Auth(action, f"{base}:{kind}/*", _request_tags(spec), call)
        for used in uses:
            rid = params[EC2_IDS[used]]
            yield Auth(action, f"{base}:{used}/{rid}", _resource_tags(tags_of("ec2", rid)), call)
        yield from _tag_on_create(op, params, base, call)
    elif op in EC2_USES:
        for used in EC2_USES[op]:
            rid = params[EC2_IDS[used]]
            yield Auth(action, f"{base}:{used}/{rid}", _resource_tags(tags_of("ec2", rid)), call)
        if op.endswith("SecurityGroupIngress"):
            yield Auth(action, f"{base}:security-group-rule/*", call=call)
    elif op == "GetConsoleOutput":  # a failed boot's console (reconciler/console.py)
        iid = params["InstanceId"]
        yield Auth(action, f"{base}:instance/{iid}", _resource_tags(tags_of("ec2", iid)), call)
    elif op == "DisassociateRouteTable":
        rt = tags_of("association", params["AssociationId"])
        yield Auth(action, f"{base}:route-table/{rt['id']}",
                   _resource_tags(tags_of("ec2", rt["id"])), call)
    else:
        raise AssertionError(f"no authorisation model for ec2:{op}")


def _tag_on_create(op: str, params: dict, base: str, call: str) -> Iterator[Auth]:
    """Tags given at creation are authorised as ec2:CreateTags with ec2:CreateAction."""
    for spec in params.get("TagSpecifications", []):
        tags = {t["Key"]: t["Value"] for t in spec["Tags"]}
        yield Auth("ec2:CreateTags", f"{base}:{spec['ResourceType']}/*",
                   {"ec2:CreateAction": op, **_request_tags(tags)}, call)


IAM_READS = {"GetRole", "ListRolePolicies", "ListAttachedRolePolicies",
             "ListInstanceProfilesForRole", "GetInstanceProfile"}


def _iam(op: str, params: dict, account: str, tags_of: TagsOf, call: str) -> Iterator[Auth]:
    action = f"iam:{op}"
    if "InstanceProfileName" in params:
        name = params["InstanceProfileName"]
        arn, kind = f"arn:aws:iam::{account}:instance-profile/{name}", "profile"
    else:
        name = params["RoleName"]
        arn, kind = f"arn:aws:iam::{account}:role/{name}", "role"
    if op in IAM_READS:
        yield Auth(action, arn, call=call)
    elif op.startswith("Create"):
        tags = {t["Key"]: t["Value"] for t in params.get("Tags", [])}
        yield Auth(action, arn, _request_tags(tags), call)
        if tags:
            tag_action = "iam:TagRole" if kind == "role" else "iam:TagInstanceProfile"
            yield Auth(tag_action, arn, _request_tags(tags), call)
    else:
        yield Auth(action, arn, _resource_tags(tags_of(kind, name)), call)
