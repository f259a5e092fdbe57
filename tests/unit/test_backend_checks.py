"""Credential checks: permission probes under IAM enforcement change nothing and name every
missing action; key classification and masking."""

from __future__ import annotations

import pytest

from overcast.backends.aws import checks, policies, session
from overcast.backends.aws.errors import CredentialsInvalid
from tests.unit.backend_fixtures import REGION, customer, enforced_aws

pytestmark = pytest.mark.timeout(120)


def _ctx(acct: dict) -> session.AwsContext:
    return session.context(REGION, acct["access_key_id"], acct["secret_access_key"])


def test_every_policy_action_has_a_probe():
    assert policies.all_actions() - set(checks.PROBES) == set(checks.UNPROBED)


def test_probes_allow_an_admin_and_create_nothing(monkeypatch):
    with enforced_aws(monkeypatch) as operator:
        ctx = _ctx(operator)
        assert checks.missing_actions(ctx, policies.all_actions()) == []
        ec2, iam = ctx.client("ec2"), ctx.client("iam")
        assert [v for v in ec2.describe_vpcs()["Vpcs"] if not v["IsDefault"]] == []
        assert ec2.describe_internet_gateways()["InternetGateways"] == []
        assert ec2.describe_addresses()["Addresses"] == []
        assert ec2.describe_nat_gateways()["NatGateways"] == []
        assert ec2.describe_instances()["Reservations"] == []
        assert [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]] == \
            ["default"]
        assert iam.list_roles()["Roles"] == []
        assert iam.list_instance_profiles()["InstanceProfiles"] == []
        assert ctx.client("logs").describe_log_groups()["logGroups"] == []
        assert ctx.client("ecr").describe_repositories()["repositories"] == []


def test_missing_actions_are_named(monkeypatch):
    with enforced_aws(monkeypatch):
        nothing = _ctx(customer(setup=False, ongoing=False))
        missing = checks.missing_actions(nothing, policies.all_actions())
        assert set(missing) == policies.all_actions() - checks.UNPROBED
        ongoing_only = _ctx(customer(setup=False))
        assert set(checks.missing_actions(ongoing_only, policies.all_actions())) == \
            policies.actions("setup") - policies.actions("ongoing")
        one_less = _ctx(customer(drop=("ec2:RunInstances", "logs:GetLogEvents")))
        assert checks.missing_actions(one_less, policies.all_actions()) == \
            ["ec2:RunInstances", "logs:GetLogEvents"]


def test_wrong_keys_are_credentials_invalid(monkeypatch):
    with enforced_aws(monkeypatch):
        acct = customer()
        bad = session.context(REGION, acct["access_key_id"], "not-the-secret")
        with pytest.raises(CredentialsInvalid) as info:
            checks.caller_identity(bad)
        assert "not-the-secret" not in str(info.value)
        unknown = session.context(REGION, "AKIAUNKNOWN000000000", "whatever")
        with pytest.raises(CredentialsInvalid):
            checks.caller_identity(unknown)
        assert checks.caller_identity(_ctx(acct))["account"] == acct["account_id"]


def test_key_classification_and_masking():
    assert checks.is_temporary_key("ASIAEXAMPLE123456789")
    assert checks.is_temporary_key(" asiaexample ")
    assert not checks.is_temporary_key("AKIAEXAMPLE123456789")
    masked = checks.mask_key_id("AKIAEXAMPLE123456789")
    # Only the key id's own last 4 characters, whatever was given.
    assert masked == "*" * 16 + "6789" and "AKIA" not in masked
    assert checks.mask_key_id("short") == "*" * 20
