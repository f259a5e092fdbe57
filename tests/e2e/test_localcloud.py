"""The local cloud in this process: state file, anonymous S3, capacity faults, spot reclaim."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import boto3
import botocore.exceptions
import pandas as pd
import pyarrow.parquet as pq
import pytest

from overcast.localcloud import seed
from overcast.localcloud.main import LocalCloud, read_state
from tests.e2e.helpers import environ, wait

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]



@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    home = tmp_path_factory.mktemp("lc-home")
    with environ(OVERCAST_HOME=str(home)):
        lc = LocalCloud(port=0, imds_port=0)
        try:
            yield lc
        finally:
            lc.stop()


def client(cloud: LocalCloud, service: str, region: str = "us-east-1", **keys: str):
    keys = keys or {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    return boto3.client(service, region_name=region, endpoint_url=cloud.endpoint, **keys)


def launch(cloud: LocalCloud, region: str = "us-east-1", **kw) -> str:
    """An instance of the stock Debian 12 AMI that stays up (a container, containers.py)."""
    ec2 = client(cloud, "ec2", region)
    ami = client(cloud, "ssm", region).get_parameter(
        Name="/aws/service/debian/release/12/latest/amd64")["Parameter"]["Value"]
    reply = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType="t3.medium",
                              UserData="#!/bin/sh\nsleep 600\n", **kw)
    return reply["Instances"][0]["InstanceId"]


def state(cloud: LocalCloud, instance_id: str, region: str = "us-east-1") -> str:
    reply = client(cloud, "ec2", region).describe_instances(InstanceIds=[instance_id])
    return reply["Reservations"][0]["Instances"][0]["State"]["Name"]


def test_state_file(cloud):
    assert read_state() == {"endpoint": cloud.endpoint, "imds": cloud.imds_url,
                            "pid": os.getpid(), "enforce_iam": False,
                            "registries": cloud.registries.state(),
                            "identity_cert": str(cloud.signer.cert_path), "hollow": None}


def read_anonymously(cloud: LocalCloud, month: int) -> pd.DataFrame:
    """Read in a fresh process whose only AWS setting is the endpoint (no keys at all)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_ENDPOINT_URL"] = cloud.endpoint
    code = ("import pandas as pd, sys; pd.read_parquet('s3://nyc-tlc/' + sys.argv[1], "
            "storage_options={'anon': True}).to_parquet(sys.stdout.buffer)")
    done = subprocess.run([sys.executable, "-c", code, seed.key(month)], env=env,
                          capture_output=True, timeout=60, check=True)
    return pq.read_table(io.BytesIO(done.stdout)).to_pandas()


def test_anonymous_read_of_taxi_data(cloud):
    expected = seed.month_table(2).to_pandas()
    pd.testing.assert_frame_equal(read_anonymously(cloud, 2), expected)
    listing = client(cloud, "s3").list_objects_v2(Bucket="nyc-tlc", Prefix="trip data/")
    assert len(listing["Contents"]) == 12


def test_anonymous_read_while_iam_is_enforced(cloud):
    from overcast.localcloud import motoserver

    motoserver.set_enforce_iam(True)
    try:
        assert len(read_anonymously(cloud, 1)) == seed.rows_in(1)
        with pytest.raises(botocore.exceptions.ClientError):  # fake keys are refused now
            client(cloud, "ec2").describe_vpcs()
    finally:
        motoserver.set_enforce_iam(False)


def test_capacity_fault_and_spot_interruption(cloud, monkeypatch):
    import urllib.request

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore retries 5xx with backoff otherwise
    rule = {"action": "RunInstances", "error": "InsufficientInstanceCapacity",
            "zones": ["us-east-1c"], "count": 10}
    request = urllib.request.Request(cloud.endpoint + "/_overcast/faults", method="POST",
                                     data=json.dumps(rule).encode())
    urllib.request.urlopen(request, timeout=10).read()
    with pytest.raises(botocore.exceptions.ClientError) as err:
        launch(cloud, Placement={"AvailabilityZone": "us-east-1c"})
    assert err.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
    cloud.faults.clear()

    iid = launch(cloud, Placement={"AvailabilityZone": "us-east-1c"},
                 InstanceMarketOptions={"MarketType": "spot"})
    boxes = cloud.runner.containers.boxes
    wait(lambda: iid in boxes and boxes[iid].state == "running", 60, "container start")
    cloud.interrupt_spot(iid, notice_seconds=0.2)
    assert cloud.imds.lookup(iid, "meta-data/spot/instance-action")[0] == 200
    wait(lambda: state(cloud, iid) == "terminated", 10, "spot reclaimed")
    wait(lambda: iid not in boxes or boxes[iid].state == "gone", 20, "container removed")
    reason = client(cloud, "ec2").describe_instances(InstanceIds=[iid])
    assert (reason["Reservations"][0]["Instances"][0]["StateReason"]["Code"]
            == "Server.SpotInstanceTermination")
