"""AwsContext, credentials modes and the call recorder."""

from __future__ import annotations

import datetime as dt
import json

import boto3
import pytest
from botocore.credentials import RefreshableCredentials

from overcast.backends.aws import session


def test_default_chain_and_cached_clients(aws):
    ctx = session.context("eu-west-1")
    assert ctx.region == "eu-west-1"
    assert ctx.client("ec2") is ctx.client("ec2")
    assert ctx.client("ec2").meta.region_name == "eu-west-1"
    assert ctx.account_id() == "123456789012"
    assert "testing" not in repr(ctx)


def test_explicit_keys(aws):
    ctx = session.context("us-east-1", "AKIAEXAMPLE", "secret")
    assert ctx.session.get_credentials().access_key == "AKIAEXAMPLE"
    with pytest.raises(ValueError):
        session.context("us-east-1", access_key_id="AKIAEXAMPLE")


def test_contexts_share_api_models_but_never_credentials(aws):
    """Every context's session reads the API models from one loader (parsed once per
    process: session._LOADER), and each keeps its own keys, region and clients."""
    session.preload()
    a = session.context("us-east-1", "AKIAAAAAAAAAAAAAAAAA", "secret-a")
    b = session.context("eu-west-1", "AKIABBBBBBBBBBBBBBBB", "secret-b")
    operator = session.context("us-east-1")
    loaders = {id(c.session._session.get_component("data_loader")) for c in (a, b, operator)}
    assert loaders == {id(session._LOADER)}
    assert a.session.get_credentials().access_key == "AKIAAAAAAAAAAAAAAAAA"
    assert b.session.get_credentials().access_key == "AKIABBBBBBBBBBBBBBBB"
    assert operator.session.get_credentials().access_key not in ("AKIAAAAAAAAAAAAAAAAA",
                                                                 "AKIABBBBBBBBBBBBBBBB")
    assert a.client("ec2") is not b.client("ec2")
    assert b.client("ec2").meta.region_name == "eu-west-1"


def test_assume_role_with_external_id_refreshes(aws):
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }

    arn = boto3.client("iam", region_name="us-east-1").create_role(
        RoleName="overcast-access", AssumeRolePolicyDocument=json.dumps(trust)
    )["Role"]["Arn"]
    ctx = session.context("us-east-1", role_arn=arn, external_id="ext-123")
    creds = ctx.session.get_credentials()
    assert isinstance(creds, RefreshableCredentials)
    first = creds.get_frozen_credentials()
    assert first.token
    who = ctx.client("sts").get_caller_identity()["Arn"]
    assert ":assumed-role/overcast-access/overcast" in who
    # Pretend the credentials are about to expire: the next use fetches new ones.
    creds._expiry_time = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    assert creds.get_frozen_credentials().access_key != first.access_key


def test_record_actions(aws):
    ctx = session.context("us-east-1")
    ctx.client("ec2")  # an already-cached client is hooked too
    calls = session.record_actions(ctx)
    ctx.client("ec2").describe_vpcs()
    ctx.client("logs").describe_log_groups()
    ctx.client("ecr").describe_repositories()
    assert calls == ["ec2:DescribeVpcs", "logs:DescribeLogGroups", "ecr:DescribeRepositories"]

    plain = boto3.Session(region_name="us-east-1")
    recorded = session.record_actions(plain)
    plain.client("iam").list_roles()
    assert recorded == ["iam:ListRoles"]
