"""IMDS answers and fault rules, without starting a local cloud."""

from __future__ import annotations

import io
import json

import pytest

from overcast.localcloud.faults import ControlMiddleware, FaultRule, Faults
from overcast.localcloud.imds import InstanceMetadata, MetadataService

pytestmark = pytest.mark.timeout(30)


def make_imds() -> MetadataService:
    creds = {"Code": "Success", "AccessKeyId": "ASIA1", "SecretAccessKey": "s", "Token": "t",
             "Expiration": "2030-01-01T00:00:00Z"}
    imds = MetadataService(port=0, credentials=lambda iid: ("role-a", creds))
    imds.register(InstanceMetadata("i-1", '{"overcast": 1}', "127.10.0.1", "us-east-1b"))
    return imds


def test_imds_paths():
    imds = make_imds()
    try:
        assert imds.lookup("i-1", "user-data") == (200, "text/plain", '{"overcast": 1}')
        assert imds.lookup("i-1", "meta-data/local-ipv4")[2] == "127.10.0.1"
        assert imds.lookup("i-1", "meta-data/public-ipv4")[2] == "127.10.0.1"
        assert imds.lookup("i-1", "meta-data/placement/availability-zone")[2] == "us-east-1b"
        assert imds.lookup("i-1", "meta-data/iam/security-credentials/")[2] == "role-a"
        status, _, body = imds.lookup("i-1", "meta-data/iam/security-credentials/role-a")
        assert status == 200 and json.loads(body)["AccessKeyId"] == "ASIA1"
        assert imds.lookup("i-2", "user-data")[0] == 404
        assert imds.lookup("i-1", "meta-data/spot/instance-action")[0] == 404
    finally:
        imds.stop()


def test_fault_rules_match_zone_and_count():
    faults = Faults()
    faults.add(FaultRule(zones=["us-east-1a"], count=2))
    assert faults.match("RunInstances", "us-east-1b") is None
    assert faults.match("DescribeInstances", "us-east-1a") is None
    assert faults.match("RunInstances", "us-east-1a").error == "InsufficientInstanceCapacity"
    assert faults.match("RunInstances", "us-east-1a") is not None
    assert faults.match("RunInstances", "us-east-1a") is None  # used up
    with pytest.raises(ValueError):
        faults.add(FaultRule(error="NoSuchError"))


def test_middleware_answers_with_ec2_error():
    faults = Faults()
    faults.add(FaultRule(error="RequestLimitExceeded"))
    app = ControlMiddleware(lambda env, start: [b"moto"], faults)
    body = b"Action=RunInstances&Version=2016-11-15&Placement.AvailabilityZone=us-east-1a"
    seen = {}
    out = app({"REQUEST_METHOD": "POST", "PATH_INFO": "/", "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body)}, lambda status, headers: seen.update(s=status))
    assert seen["s"].startswith("503") and b"<Code>RequestLimitExceeded</Code>" in out[0]
    out = app({"REQUEST_METHOD": "POST", "PATH_INFO": "/", "CONTENT_LENGTH": "19",
               "wsgi.input": io.BytesIO(b"Action=DescribeVpcs")}, lambda *a: None)
    assert out == [b"moto"]
