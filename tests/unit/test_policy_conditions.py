"""The policy documents as AWS would evaluate them: linted by parliament, and every condition
checked against the requests the code really sends (moto evaluates no conditions)."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError
from parliament import analyze_policy_string

from overcast.backends.aws import firewall, iam, instances, policies, teardown
from tests.unit.conftest import DEPLOYMENT
from tests.unit.policy_eval import Auth, allowed, authorisations
from tests.unit.test_aws_policies import _cluster, _setup, register_image

ACCOUNT, REGION = "123456789012", "us-east-1"
BASE = f"arn:aws:ec2:{REGION}:{ACCOUNT}"
OURS = {"overcast:managed": "true", "overcast:deployment": DEPLOYMENT}


def _docs(role: str = "alice") -> list[dict]:
    return [policies.load(name, DEPLOYMENT, role) for name in policies.NAMES]


def test_parliament_finds_nothing_but_the_split_statements():
    """RunInstances (and the firewall calls) are split by resource type on purpose, so that
    each part carries its own condition; parliament flags each part as incomplete. Every such
    finding must be covered by another statement for the same action: the union is whole."""
    for name in policies.NAMES:
        doc = policies.load(name, DEPLOYMENT, "alice")
        findings = analyze_policy_string(json.dumps(doc)).findings
        for finding in findings:
            assert finding.issue == "RESOURCE_MISMATCH", (name, finding.issue, finding.detail)
            for need in finding.detail:
                covering = [s for s in doc["Statement"] if need["action"] in s["Action"]
                            and _covers(s["Resource"], need["required_format"])]
                assert covering, (name, need)


def _covers(resources, required: str) -> bool:
    # parliament writes "arn:*:ec2:*:*:subnet/*"; the documents say "arn:aws:ec2:*:*:subnet/*"
    wanted = required.replace("arn:*:", "arn:aws:", 1)
    return any(r == wanted or r == "*" for r in ([resources] if isinstance(resources, str)
                                                 else resources))


def _tags_of(admin: boto3.Session):
    ec2, iam_ = admin.client("ec2", region_name=REGION), admin.client("iam")

    def tags_of(kind: str, ident: str) -> dict[str, str]:
        try:
            if kind == "ec2":
                found = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [ident]}])
                return {t["Key"]: t["Value"] for t in found["Tags"]}
            if kind == "role":
                return {t["Key"]: t["Value"] for t in iam_.list_role_tags(RoleName=ident)["Tags"]}
            if kind == "profile":
                profile = iam_.get_instance_profile(InstanceProfileName=ident)["InstanceProfile"]
                return {t["Key"]: t["Value"] for t in profile.get("Tags", [])}
            if kind == "profile-role":
                profile = iam_.get_instance_profile(InstanceProfileName=ident)["InstanceProfile"]
                return {"role": profile["Roles"][0]["RoleName"]}
            if kind == "association":
                rts = ec2.describe_route_tables(Filters=[{
                    "Name": "association.route-table-association-id", "Values": [ident]}])
                return {"id": rts["RouteTables"][0]["RouteTableId"]}
        except ClientError:
            return {}
        raise AssertionError(kind)
    return tags_of


def _record(ctx) -> list[Auth]:
    """Every call made through ctx, as the authorisation requests AWS would evaluate."""
    auths: list[Auth] = []
    tags_of = _tags_of(boto3.Session(aws_access_key_id="admin", aws_secret_access_key="admin"))

    def hook(params, model, **_):
        service = model.service_model.service_name
        auths.extend(authorisations(service, model.name, params, REGION, ACCOUNT, tags_of))

    ctx.session.events.register("before-parameter-build", hook)
    for client in ctx._clients.values():  # clients made before copy the session's hooks then
        client.meta.events.register("before-parameter-build", hook)
    return auths


def test_every_call_of_setup_cluster_and_teardown_meets_the_conditions(ctx):
    image = register_image(ctx)
    auths = _record(ctx)
    _setup(ctx)
    launched = _cluster(ctx, image)
    _cluster(ctx, image, ports=(8786,))  # firewall settings changed: revoke + authorize
    instances.terminate(ctx, [launched.aws_id])
    firewall.delete_cluster_security_groups(ctx, 1)
    teardown.teardown_account(ctx, "alice", owner="alice")
    denied = [a for a in auths if not allowed(_docs(), a)]
    assert not denied, denied
    calls = {a.call for a in auths}
    for needed in ("ec2:RunInstances", "ec2:TerminateInstances", "ec2:CreateSecurityGroup",
                   "ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress",
                   "ec2:DeleteSecurityGroup",
                   "ec2:CreateVpc", "ec2:CreateNatGateway", "ec2:DeleteVpc", "iam:CreateRole",
                   "iam:PutRolePolicy", "iam:DeleteRole", "logs:CreateLogGroup",
                   "ecr:CreateRepository"):
        assert needed in calls, needed
    assert any(a.action == "iam:PassRole" for a in auths)
    assert any(a.action == "ec2:CreateTags" and a.context["ec2:CreateAction"] == "RunInstances"
               for a in auths)


@pytest.mark.parametrize("auth", [
    # An instance without our tags, or another control plane's, cannot be terminated.
    Auth("ec2:TerminateInstances", f"{BASE}:instance/i-1", {}),
    Auth("ec2:TerminateInstances", f"{BASE}:instance/i-1", {
        "aws:ResourceTag/overcast:managed": "true",
        "aws:ResourceTag/overcast:deployment": "d-someone-else"}),
    # RunInstances must tag what it makes.
    Auth("ec2:RunInstances", f"{BASE}:instance/*", {}),
    Auth("ec2:RunInstances", f"{BASE}:network-interface/*", {
        "aws:RequestTag/overcast:managed": "true"}),
    # ... and nothing but instances, volumes, interfaces (tagged), subnets, groups, images.
    Auth("ec2:RunInstances", f"{BASE}:key-pair/k", {}),
    # CreateTags only while creating: never retagging an existing resource.
    Auth("ec2:CreateTags", f"{BASE}:instance/i-1", {"aws:RequestTag/overcast:managed": "true"}),
    Auth("ec2:CreateTags", f"{BASE}:instance/i-1", {"ec2:CreateAction": "CreateTags"}),
    Auth("ec2:DeleteSecurityGroup", f"{BASE}:security-group/sg-1", {}),
    Auth("ec2:DeleteVpc", f"{BASE}:vpc/vpc-1", {"aws:ResourceTag/overcast:managed": "true"}),
    # PassRole: only the account's role, only to EC2.
    Auth("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/admin",
         {"iam:PassedToService": "ec2.amazonaws.com"}),
    Auth("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/alice",
         {"iam:PassedToService": "lambda.amazonaws.com"}),
    Auth("iam:CreateServiceLinkedRole", f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/"
         "spot.amazonaws.com/AWSServiceRoleForEC2Spot",
         {"iam:AWSServiceName": "ecs.amazonaws.com"}),
    Auth("iam:DeleteRole", f"arn:aws:iam::{ACCOUNT}:role/alice", {}),
    Auth("iam:CreateRole", f"arn:aws:iam::{ACCOUNT}:role/alice", {}),
], ids=lambda a: f"{a.action}-{a.resource.rsplit(':', 1)[-1]}")
def test_what_the_conditions_refuse(auth):
    assert not allowed(_docs(), auth)


def test_what_the_conditions_allow():
    ours = {f"aws:ResourceTag/{k}": v for k, v in OURS.items()}
    assert allowed(_docs(), Auth("ec2:TerminateInstances", f"{BASE}:instance/i-1", ours))
    assert allowed(_docs(), Auth("iam:CreateServiceLinkedRole", f"arn:aws:iam::{ACCOUNT}:role/"
                                 "aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot",
                                 {"iam:AWSServiceName": "spot.amazonaws.com"}))
    # An unscoped document (no deployment known) still requires the managed tag.
    unscoped = [policies.load(n) for n in policies.NAMES]
    other = {**ours, "aws:ResourceTag/overcast:deployment": "d-other"}
    assert allowed(unscoped, Auth("ec2:TerminateInstances", f"{BASE}:instance/i-1", other))
    assert not allowed(unscoped, Auth("ec2:TerminateInstances", f"{BASE}:instance/i-1", {}))


def test_instance_role_reads_only_granted_buckets():
    none = [iam.instance_policy("alice")]
    some = [iam.instance_policy("alice", ["data-a"])]
    get = Auth("s3:GetObject", "arn:aws:s3:::data-a/x.parquet")
    lst = Auth("s3:ListBucket", "arn:aws:s3:::data-a")
    assert not allowed(none, get) and not allowed(none, lst)
    assert allowed(some, get) and allowed(some, lst)
    assert not allowed(some, Auth("s3:GetObject", "arn:aws:s3:::operator-private/x"))
    assert not allowed(some, Auth("s3:PutObject", "arn:aws:s3:::data-a/x"))
    assert not allowed(some, Auth("s3:GetObject", "arn:aws:s3:::data-a-other/x"))
    logs_ = Auth("logs:PutLogEvents", "arn:aws:logs:us-east-1:1:log-group:alice:log-stream:i-1")
    assert allowed(none, logs_)
    assert not allowed(none, Auth("logs:PutLogEvents",
                                  "arn:aws:logs:us-east-1:1:log-group:bob:log-stream:i-1"))
