"""Instance role/profile, log group and ECR repository, against in-process moto."""

from __future__ import annotations

import json
import time

import pytest

from overcast import tags as T
from overcast.backends.aws import iam, logs, registry
from overcast.backends.aws.errors import AwsError


def test_instance_role_named_after_slug(ctx):
    seen = []
    assert iam.ensure_instance_role(ctx, "alice", seen.append) == "alice"
    assert [(r.kind, r.state) for r in seen] == [
        ("iam-role", "created"),
        ("instance-profile", "created"),
    ]
    client = ctx.client("iam")
    role = client.get_role(RoleName="alice")["Role"]
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    assert T.from_aws(role["Tags"])[T.ACCOUNT] == "alice"
    doc = client.get_role_policy(RoleName="alice", PolicyName=iam.INLINE_POLICY)["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    actions = {a for s in doc["Statement"] for a in s["Action"]}
    # No S3 at all unless the account names buckets (s3_read); ECR: the slug's repository.
    assert {a for a in actions if not a.startswith("ecr:")} == {
        "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"}
    ecr = [s for s in doc["Statement"] if s["Sid"] == "EnvironmentImages"][0]
    assert ecr["Resource"] == "arn:aws:ecr:*:*:repository/alice"
    assert "ecr:BatchGetImage" in ecr["Action"] and "ecr:PutImage" in ecr["Action"]
    log_stmt = doc["Statement"][0]
    assert all(":log-group:alice" in r for r in log_stmt["Resource"])
    profile = client.get_instance_profile(InstanceProfileName="alice")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["alice"]

    again = []
    assert iam.ensure_instance_role(ctx, "alice", again.append) == "alice"
    assert {r.state for r in again} == {"found"}
    assert len(client.list_instance_profiles()["InstanceProfiles"]) == 1


def test_profile_without_role_is_repaired(ctx):
    client = ctx.client("iam")
    iam.ensure_instance_role(ctx, "alice")
    client.remove_role_from_instance_profile(InstanceProfileName="alice", RoleName="alice")
    iam.ensure_instance_role(ctx, "alice")
    profile = client.get_instance_profile(InstanceProfileName="alice")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["alice"]


def test_foreign_role_is_left_alone(ctx):
    ctx.client("iam").create_role(RoleName="alice", AssumeRolePolicyDocument="{}")
    with pytest.raises(AwsError, match="not created by this overcast"):
        iam.ensure_instance_role(ctx, "alice")


def test_delete_instance_role(ctx):
    client = ctx.client("iam")
    iam.ensure_instance_role(ctx, "alice")
    # Users attach their own S3 policies to the role; teardown must cope.
    arn = client.create_policy(
        PolicyName="s3",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            }
        ),
    )["Policy"]["Arn"]
    client.attach_role_policy(RoleName="alice", PolicyArn=arn)
    seen = []
    iam.delete_instance_role(ctx, "alice", seen.append)
    assert {(r.kind, r.state) for r in seen} == {
        ("iam-role", "deleted"),
        ("instance-profile", "deleted"),
    }
    assert not client.list_roles()["Roles"]
    assert not client.list_instance_profiles()["InstanceProfiles"]
    iam.delete_instance_role(ctx, "alice")  # idempotent


def test_log_group_retention(ctx):
    seen = []
    assert logs.ensure_log_group(ctx, "alice", report=seen.append) == "alice"
    assert seen[0].kind == "log-group" and seen[0].state == "created"
    client = ctx.client("logs")
    group = client.describe_log_groups(logGroupNamePrefix="alice")["logGroups"][0]
    assert group["retentionInDays"] == 30
    client.put_retention_policy(logGroupName="alice", retentionInDays=1)
    again = []
    logs.ensure_log_group(ctx, "alice", report=again.append)
    assert again[0].state == "found"
    assert (
        client.describe_log_groups(logGroupNamePrefix="alice")["logGroups"][0]["retentionInDays"]
        == 30
    )
    assert (
        client.list_tags_for_resource(resourceArn=group["arn"].rstrip(":*"))["tags"][T.ACCOUNT]
        == "alice"
    )


def test_read_streams(ctx):
    logs.ensure_log_group(ctx, "alice")
    client = ctx.client("logs")
    now = int(time.time() * 1000)
    client.create_log_stream(logGroupName="alice", logStreamName="i-1")
    client.put_log_events(
        logGroupName="alice",
        logStreamName="i-1",
        logEvents=[{"timestamp": now - 1000 + k, "message": f"line {k}"} for k in range(5)],
    )
    out = logs.read_streams(ctx, "alice", ["i-1", "i-missing"])
    assert [e["message"] for e in out["i-1"]] == [f"line {k}" for k in range(5)]
    assert set(out["i-1"][0]) == {"timestamp", "message"}
    assert out["i-missing"] == []
    later = logs.read_streams(ctx, "alice", ["i-1"], start_ms=now - 1000 + 3)
    assert [e["message"] for e in later["i-1"]] == ["line 3", "line 4"]
    assert logs.read_streams(ctx, "nobody", ["i-1"]) == {"i-1": []}


def test_delete_log_group(ctx):
    logs.ensure_log_group(ctx, "alice")
    seen = []
    logs.delete_log_group(ctx, "alice", seen.append)
    assert seen[0].state == "deleted"
    assert not ctx.client("logs").describe_log_groups()["logGroups"]
    logs.delete_log_group(ctx, "alice")


def test_ecr_repository(ctx):
    seen = []
    uri = registry.ensure_ecr_repository(ctx, "alice", seen.append)
    assert uri.endswith("/alice")
    assert registry.ensure_ecr_repository(ctx, "alice", seen.append) == uri
    assert [r.state for r in seen] == ["created", "found"]
    repos = ctx.client("ecr").describe_repositories()["repositories"]
    assert [r["repositoryName"] for r in repos] == ["alice"]
    registry.delete_ecr_repository(ctx, "alice")
    registry.delete_ecr_repository(ctx, "alice")
    assert not ctx.client("ecr").describe_repositories()["repositories"]


def test_instance_role_reads_exactly_the_granted_buckets(ctx):
    iam.ensure_instance_role(ctx, "alice", s3_read=["data-b", "data-a"])
    client = ctx.client("iam")
    doc = client.get_role_policy(RoleName="alice", PolicyName=iam.INLINE_POLICY)["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    s3 = {s["Action"]: s["Resource"] for s in doc["Statement"] if "s3:" in str(s["Action"])}
    assert s3 == {"s3:ListBucket": ["arn:aws:s3:::data-a", "arn:aws:s3:::data-b"],
                  "s3:GetObject": ["arn:aws:s3:::data-a/*", "arn:aws:s3:::data-b/*"]}
    iam.ensure_instance_role(ctx, "alice")  # grants withdrawn: the policy is rewritten
    doc = client.get_role_policy(RoleName="alice", PolicyName=iam.INLINE_POLICY)["PolicyDocument"]
    assert "s3:" not in json.dumps(doc)


def test_same_named_log_group_or_repository_is_neither_adopted_nor_deleted(ctx):
    from overcast.localcloud import motofixes

    motofixes.apply()  # moto kept a deleted group's tags for its same-named successor
    logs.ensure_log_group(ctx, "alice")
    logs.delete_log_group(ctx, "alice")
    ctx.client("logs").create_log_group(logGroupName="alice", tags={"team": "theirs"})
    ctx.client("ecr").create_repository(repositoryName="alice")
    with pytest.raises(AwsError, match="log group named 'alice' already exists and was not"):
        logs.ensure_log_group(ctx, "alice")
    with pytest.raises(AwsError, match="ECR repository named 'alice' already exists"):
        registry.ensure_ecr_repository(ctx, "alice")
    seen = []
    logs.delete_log_group(ctx, "alice", seen.append)
    registry.delete_ecr_repository(ctx, "alice", seen.append)
    assert seen == []
    assert ctx.client("logs").describe_log_groups()["logGroups"][0]["logGroupName"] == "alice"
    assert len(ctx.client("ecr").describe_repositories()["repositories"]) == 1


def test_another_deployments_resources_are_not_ours(ctx, monkeypatch):
    iam.ensure_instance_role(ctx, "alice")
    logs.ensure_log_group(ctx, "alice")
    monkeypatch.setenv(T.DEPLOYMENT_ENV, "d-staging")  # a second control plane, same account
    with pytest.raises(AwsError, match="IAM role named 'alice' already exists"):
        iam.ensure_instance_role(ctx, "alice")
    with pytest.raises(AwsError, match="log group named 'alice'"):
        logs.ensure_log_group(ctx, "alice")
    iam.delete_instance_role(ctx, "alice")
    logs.delete_log_group(ctx, "alice")
    assert ctx.client("iam").get_role(RoleName="alice")["Role"]["RoleName"] == "alice"
    assert len(ctx.client("logs").describe_log_groups()["logGroups"]) == 1
