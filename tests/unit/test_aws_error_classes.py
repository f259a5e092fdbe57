"""EC2's error codes sorted into the cloud-neutral classes the reconciler acts on: quota
(stop scaling, name the quota), server (retry with backoff), capacity (move zones), fatal."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from overcast.backends import base
from overcast.backends.aws.errors import quota_for_type, translate
from overcast.backends.aws.provider import AwsProvider

STANDARD = "Standard (A, C, D, H, I, M, R, T, Z)"


def client_error(code, message="", op="RunInstances", status=400):
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, op)


@pytest.mark.parametrize("code,quota", [
    ("VcpuLimitExceeded", f"Running On-Demand {STANDARD} instances"),
    ("InstanceLimitExceeded", f"Running On-Demand {STANDARD} instances"),
    ("MaxSpotInstanceCountExceeded", f"All {STANDARD} Spot Instance Requests"),
    ("AddressLimitExceeded", "EC2-VPC Elastic IPs"),
    ("VpcLimitExceeded", "VPCs per Region"),
    ("SecurityGroupLimitExceeded", "VPC security groups per Region"),
    ("NatGatewayLimitExceeded", "NAT gateways per Availability Zone"),
])
def test_quota_errors_name_the_quota_to_raise(code, quota):
    err = translate(client_error(code, "You have requested more vCPU capacity than allowed"))
    assert isinstance(err, base.QuotaExceeded) and not err.retryable
    assert err.quota == quota and quota in str(err) and "Service Quotas" in str(err)


def test_max_spot_count_is_region_wide_not_a_zone_capacity_error():
    err = translate(client_error("MaxSpotInstanceCountExceeded", "Max spot instance count"))
    assert not isinstance(err, base.CapacityError)


@pytest.mark.parametrize("code,status", [
    ("InternalError", 500), ("InternalFailure", 500), ("ServiceUnavailable", 503),
    ("Unavailable", 503), ("SomethingNewOnTheServer", 502)])
def test_server_errors_are_retried(code, status):
    err = translate(client_error(code, "An internal error has occurred", status=status))
    assert isinstance(err, base.ServerError) and err.retryable


@pytest.mark.parametrize("code", ["RequestLimitExceeded", "Throttling"])
def test_throttling_is_a_server_error_retried_with_backoff(code):
    err = translate(client_error(code, "Rate exceeded", status=503))
    assert isinstance(err, base.Throttled) and isinstance(err, base.ServerError)


def test_capacity_with_a_500_status_stays_a_capacity_error():
    err = translate(client_error("InsufficientInstanceCapacity",
                                 "no capacity in us-east-1a", status=500))
    assert isinstance(err, base.CapacityError) and err.zone == "us-east-1a"


def test_unknown_client_errors_are_fatal_provider_errors():
    err = translate(client_error("InvalidAMIID.Malformed", "bad id"))
    assert type(err) is base.ProviderError and not err.retryable


@pytest.mark.parametrize("itype,spot,quota", [
    ("g4dn.xlarge", False, "Running On-Demand G and VT instances"),
    ("p3.2xlarge", True, "All P Spot Instance Requests"),
    ("inf2.xlarge", False, "Running On-Demand Inf instances"),
    ("m6i.large", False, f"Running On-Demand {STANDARD} instances"),
    ("c7g.large", True, f"All {STANDARD} Spot Instance Requests"),
])
def test_vcpu_quota_follows_the_instance_family(itype, spot, quota):
    assert quota_for_type(f"Running On-Demand {STANDARD} instances", itype, spot) == quota
    assert quota_for_type("EC2-VPC Elastic IPs", itype, spot) == "EC2-VPC Elastic IPs"


def test_aws_provider_launch_names_the_family_quota(monkeypatch):
    from overcast.backends.aws import instances

    def refuse(ctx, spec):
        raise translate(client_error("VcpuLimitExceeded", "limit"))

    monkeypatch.setattr(instances, "launch", refuse)
    spec = base.LaunchSpec(role="worker", subnet_id="s", security_group_id="g",
                           instance_type="g5.xlarge", image_id="ami", instance_profile=None,
                           user_data="{}", tags={}, spot=False, client_token="t")
    with pytest.raises(base.QuotaExceeded) as caught:
        AwsProvider().launch(object(), [spec])
    assert caught.value.quota == "Running On-Demand G and VT instances"
    assert "G and VT" in str(caught.value)
