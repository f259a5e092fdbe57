"""Checking a customer's credentials before we store them: who they are, what they may do.

AWS (and moto) evaluate IAM before they look at a request's parameters, so each probe makes
the real call in a way that cannot change anything: EC2 with `DryRun=True` (and ids that do not
exist, for the operations moto runs without honouring DryRun), other services against names
that do not exist or with a parameter AWS rejects after the permission check. An access-denied
answer means the action is missing; any other answer (DryRunOperation, NotFound, a validation
error) means it is allowed. moto has no policy simulator, so this is the check that works
against both.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ... import tags as T
from .errors import DENIED, CredentialsInvalid, aws_errors, code_of, translate_any
from .session import AwsContext

PROBE = "overcast-permission-probe"
_VPC, _SUBNET, _RTB = "vpc-0000000000000000f", "subnet-0000000000000000f", "rtb-0000000000000000f"
_IGW, _SG, _EIP = "igw-0000000000000000f", "sg-0000000000000000f", "eipalloc-0000000000000000f"
_RULE = [{"IpProtocol": "tcp", "FromPort": 1, "ToPort": 1,
          "IpRanges": [{"CidrIp": "10.255.255.255/32"}]}]


# Stands for overcast's own tags (managed + this deployment), filled in at probe time: the
# policies allow creating and tagging only with them (aws:RequestTag), so a probe without them
# would be refused by AWS although the real, tagged call is allowed.
TAGS = "overcast-probe-tags"


def _ec2(method: str, **kwargs: Any) -> tuple[str, str, dict[str, Any]]:
    return "ec2", method, {"DryRun": True, **kwargs}


def _spec(*kinds: str) -> list[dict[str, Any]]:
    return [{"ResourceType": kind, "Tags": TAGS} for kind in kinds]


def _fill(value: Any) -> Any:
    if value == TAGS:
        return T.as_aws(T.resource_tags(PROBE))
    if isinstance(value, dict):
        return {k: _fill(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v) for v in value]
    return value


# action -> (service, client method, kwargs). Every call here fails or is a dry run.
PROBES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "ec2:CreateVpc": _ec2("create_vpc", CidrBlock="10.0.0.0/8",
                          TagSpecifications=_spec("vpc")),  # /8: an invalid VPC size
    "ec2:DeleteVpc": _ec2("delete_vpc", VpcId=_VPC),
    "ec2:CreateInternetGateway": _ec2("create_internet_gateway",
                                      TagSpecifications=_spec("internet-gateway")),
    "ec2:AttachInternetGateway": _ec2("attach_internet_gateway", InternetGatewayId=_IGW,
                                      VpcId=_VPC),
    "ec2:DetachInternetGateway": _ec2("detach_internet_gateway", InternetGatewayId=_IGW,
                                      VpcId=_VPC),
    "ec2:DeleteInternetGateway": _ec2("delete_internet_gateway", InternetGatewayId=_IGW),
    "ec2:CreateRouteTable": _ec2("create_route_table", VpcId=_VPC,
                                 TagSpecifications=_spec("route-table")),
    "ec2:DeleteRouteTable": _ec2("delete_route_table", RouteTableId=_RTB),
    "ec2:CreateRoute": _ec2("create_route", RouteTableId=_RTB, DestinationCidrBlock="0.0.0.0/0",
                            GatewayId=_IGW),
    "ec2:ReplaceRoute": _ec2("replace_route", RouteTableId=_RTB,
                             DestinationCidrBlock="0.0.0.0/0", GatewayId=_IGW),
    "ec2:AssociateRouteTable": _ec2("associate_route_table", RouteTableId=_RTB,
                                    SubnetId=_SUBNET),
    "ec2:DisassociateRouteTable": _ec2("disassociate_route_table",
                                       AssociationId="rtbassoc-0000000000000000f"),
    "ec2:CreateSubnet": _ec2("create_subnet", VpcId=_VPC, CidrBlock="10.0.0.0/20",
                             TagSpecifications=_spec("subnet")),
    "ec2:DeleteSubnet": _ec2("delete_subnet", SubnetId=_SUBNET),
    "ec2:ModifySubnetAttribute": ("ec2", "modify_subnet_attribute",  # has no DryRun
                                  {"SubnetId": _SUBNET, "MapPublicIpOnLaunch": {"Value": True}}),
    "ec2:AllocateAddress": _ec2("allocate_address", Domain="vpc",
                                TagSpecifications=_spec("elastic-ip")),
    "ec2:ReleaseAddress": _ec2("release_address", AllocationId=_EIP),
    "ec2:CreateNatGateway": _ec2("create_nat_gateway", SubnetId=_SUBNET, AllocationId=_EIP,
                                 TagSpecifications=_spec("natgateway")),
    "ec2:DeleteNatGateway": _ec2("delete_nat_gateway", NatGatewayId="nat-0000000000000000f"),
    "ec2:RunInstances": _ec2("run_instances", ImageId="ami-0000000000000000f", MinCount=1,
                             MaxCount=1, InstanceType="t3.micro",
                             TagSpecifications=_spec("instance", "volume", "network-interface")),
    "ec2:TerminateInstances": _ec2("terminate_instances", InstanceIds=["i-0000000000000000f"]),
    # Tagging is allowed only at creation (ec2:CreateAction): probed as a create with tags.
    "ec2:CreateTags": _ec2("create_security_group", GroupName=PROBE, Description=PROBE,
                           VpcId=_VPC, TagSpecifications=_spec("security-group")),
    "ec2:CreateSecurityGroup": _ec2("create_security_group", GroupName=PROBE,
                                    Description=PROBE, VpcId=_VPC,
                                    TagSpecifications=_spec("security-group")),
    "ec2:DeleteSecurityGroup": _ec2("delete_security_group", GroupId=_SG),
    "ec2:AuthorizeSecurityGroupIngress": _ec2("authorize_security_group_ingress", GroupId=_SG,
                                              IpPermissions=_RULE),
    "ec2:RevokeSecurityGroupIngress": _ec2("revoke_security_group_ingress", GroupId=_SG,
                                           IpPermissions=_RULE),
    # The VM image pipeline (images.py) and boot-failure reports (console output).
    "ec2:CreateImage": _ec2("create_image", InstanceId="i-0000000000000000f", Name=PROBE),
    "ec2:DeregisterImage": _ec2("deregister_image", ImageId="ami-0000000000000000f"),
    "ec2:DeleteSnapshot": _ec2("delete_snapshot", SnapshotId="snap-0000000000000000f"),
    "ec2:GetConsoleOutput": _ec2("get_console_output", InstanceId="i-0000000000000000f"),
    "ssm:GetParameter": ("ssm", "get_parameter", {"Name": f"/{PROBE}"}),  # never exists
    "ec2:DescribeAvailabilityZones": _ec2("describe_availability_zones"),
    "ec2:DescribeVpcs": _ec2("describe_vpcs"),
    "ec2:DescribeSubnets": _ec2("describe_subnets"),
    "ec2:DescribeInternetGateways": _ec2("describe_internet_gateways"),
    "ec2:DescribeRouteTables": _ec2("describe_route_tables"),
    "ec2:DescribeNatGateways": _ec2("describe_nat_gateways"),
    "ec2:DescribeAddresses": _ec2("describe_addresses"),
    "ec2:DescribeImages": _ec2("describe_images", Owners=["self"]),
    "ec2:DescribeInstanceTypes": _ec2("describe_instance_types", InstanceTypes=["t3.micro"]),
    "ec2:DescribeInstances": _ec2("describe_instances"),
    "ec2:DescribeSecurityGroups": _ec2("describe_security_groups"),
    "ec2:DescribeSecurityGroupRules": _ec2("describe_security_group_rules"),
    # IAM: the probe role/profile never exists; creates carry a parameter AWS refuses.
    "iam:GetRole": ("iam", "get_role", {"RoleName": PROBE}),
    "iam:CreateRole": ("iam", "create_role", {"RoleName": PROBE, "AssumeRolePolicyDocument": "{}",
                                              "PermissionsBoundary": f"not-an-arn-{PROBE}",
                                              "Tags": TAGS}),
    "iam:DeleteRole": ("iam", "delete_role", {"RoleName": PROBE}),
    "iam:TagRole": ("iam", "tag_role", {"RoleName": PROBE, "Tags": TAGS}),
    "iam:PutRolePolicy": ("iam", "put_role_policy", {"RoleName": PROBE, "PolicyName": PROBE,
                                                     "PolicyDocument": "{}"}),
    "iam:ListRolePolicies": ("iam", "list_role_policies", {"RoleName": PROBE}),
    "iam:DeleteRolePolicy": ("iam", "delete_role_policy", {"RoleName": PROBE,
                                                           "PolicyName": PROBE}),
    "iam:ListAttachedRolePolicies": ("iam", "list_attached_role_policies", {"RoleName": PROBE}),
    "iam:DetachRolePolicy": ("iam", "detach_role_policy", {
        "RoleName": PROBE, "PolicyArn": f"arn:aws:iam::aws:policy/{PROBE}"}),
    "iam:GetInstanceProfile": ("iam", "get_instance_profile", {"InstanceProfileName": PROBE}),
    "iam:CreateInstanceProfile": ("iam", "create_instance_profile", {
        "InstanceProfileName": PROBE, "Path": "no-slashes",  # a path must start with /
        "Tags": TAGS}),
    "iam:DeleteInstanceProfile": ("iam", "delete_instance_profile",
                                  {"InstanceProfileName": PROBE}),
    "iam:TagInstanceProfile": ("iam", "tag_instance_profile", {
        "InstanceProfileName": PROBE, "Tags": TAGS}),
    "iam:AddRoleToInstanceProfile": ("iam", "add_role_to_instance_profile",
                                     {"InstanceProfileName": PROBE, "RoleName": PROBE}),
    "iam:RemoveRoleFromInstanceProfile": ("iam", "remove_role_from_instance_profile",
                                          {"InstanceProfileName": PROBE, "RoleName": PROBE}),
    "iam:ListInstanceProfilesForRole": ("iam", "list_instance_profiles_for_role",
                                        {"RoleName": PROBE}),
    "logs:CreateLogGroup": ("logs", "create_log_group", {"logGroupName": "x" * 513}),  # > 512
    "logs:DeleteLogGroup": ("logs", "delete_log_group", {"logGroupName": PROBE}),
    "logs:PutRetentionPolicy": ("logs", "put_retention_policy",
                                {"logGroupName": PROBE, "retentionInDays": 30}),
    "logs:TagResource": ("logs", "tag_resource", {
        "resourceArn": f"arn:aws:logs:us-east-1:000000000000:log-group:{PROBE}",
        "tags": {"overcast:probe": "1"}}),
    "logs:ListTagsForResource": ("logs", "list_tags_for_resource", {
        "resourceArn": f"arn:aws:logs:us-east-1:000000000000:log-group:{PROBE}"}),
    "ecr:ListTagsForResource": ("ecr", "list_tags_for_resource", {
        "resourceArn": f"arn:aws:ecr:us-east-1:000000000000:repository/{PROBE}"}),
    "logs:DescribeLogGroups": ("logs", "describe_log_groups", {"logGroupNamePrefix": PROBE}),
    "logs:GetLogEvents": ("logs", "get_log_events", {"logGroupName": PROBE,
                                                     "logStreamName": PROBE}),
    "ecr:CreateRepository": ("ecr", "create_repository",
                             {"repositoryName": "Invalid-Upper-Case"}),  # names are lowercase
    "ecr:DeleteRepository": ("ecr", "delete_repository", {"repositoryName": PROBE}),
    "ecr:TagResource": ("ecr", "tag_resource", {
        "resourceArn": f"arn:aws:ecr:us-east-1:000000000000:repository/{PROBE}",
        "tags": [{"Key": "overcast:probe", "Value": "1"}]}),
    "ecr:DescribeRepositories": ("ecr", "describe_repositories", {"repositoryNames": [PROBE]}),
    "ecr:DescribeImages": ("ecr", "describe_images", {"repositoryName": PROBE}),
}

# Checked by AWS only inside another call (RunInstances with a profile): nothing to try alone.
UNPROBED = frozenset({"iam:PassRole", "iam:CreateServiceLinkedRole"})


def is_temporary_key(access_key_id: str) -> bool:
    """STS-issued (temporary) keys start with ASIA; long-lived IAM user keys with AKIA."""
    return access_key_id.strip().upper().startswith("ASIA")


def mask_key_id(access_key_id: str) -> str:
    """What the API shows of a key id: only its own last 4 characters (never more, so a secret
    given in the key id's place could not show through)."""
    key = access_key_id.strip()
    return f"{'*' * 16}{key[-4:]}" if len(key) >= 12 else "*" * 20


def caller_identity(ctx: AwsContext) -> dict[str, str]:
    """{"account", "arn"} of the credentials; CredentialsInvalid if AWS does not know them."""
    with aws_errors("sts:GetCallerIdentity"):
        ident = ctx.client("sts").get_caller_identity()
    return {"account": ident["Account"], "arn": ident["Arn"]}


def _denied(exc: ClientError) -> bool:
    code = code_of(exc)
    return code in DENIED or code.endswith("AccessDenied")


def missing_actions(ctx: AwsContext, actions: set[str] | frozenset[str]) -> list[str]:
    """The actions of `actions` the credentials may not call, sorted; [] if all are allowed."""
    missing: list[str] = []
    for action in sorted(actions):
        if action in UNPROBED:
            continue
        service, method, kwargs = PROBES[action]
        try:
            getattr(ctx.client(service), method)(**_fill(kwargs))
        except ClientError as exc:
            if _denied(exc):
                missing.append(action)
            elif code_of(exc) in {"InvalidClientTokenId", "SignatureDoesNotMatch",
                                  "AuthFailure", "UnrecognizedClientException"}:
                raise CredentialsInvalid(
                    f"AWS rejected the credentials while checking {action} "
                    f"({code_of(exc)}). Check the key and try again.", code=code_of(exc)
                ) from exc
            # Anything else (DryRunOperation, NotFound, a validation error) got past IAM.
        except BotoCoreError as exc:  # e.g. the endpoint is unreachable
            raise translate_any(exc, action) from exc
    return missing
