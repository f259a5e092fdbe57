"""The local cloud in this process: instances boot as processes, IMDS, anonymous S3, faults."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import botocore.exceptions
import pandas as pd
import pyarrow.parquet as pq
import pytest

from overcast.localcloud import seed
from overcast.localcloud.forkserver import ForkedProcess
from overcast.localcloud.main import LocalCloud, new_aws_account, read_state
from tests.e2e.helpers import environ, wait

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

# The test agent: records what an overcast agent would read at boot, then waits to be stopped
# (or exits with the code in its user data's "exit" field).
AGENT = r"""
import json, os, sys, time, urllib.request
import boto3
base = os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"]
user_data = urllib.request.urlopen(base + "/latest/user-data").read().decode()
out = {"user_data": user_data, "instance_id": os.environ["OVERCAST_INSTANCE_ID"],
       "has_operator_keys": "AWS_ACCESS_KEY_ID" in os.environ,
       "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
       "ip": urllib.request.urlopen(base + "/latest/meta-data/local-ipv4").read().decode()}
out["arn"] = boto3.client("sts").get_caller_identity()["Arn"]
logs = boto3.client("logs")
logs.create_log_group(logGroupName=out["instance_id"])
logs.create_log_stream(logGroupName=out["instance_id"], logStreamName="agent")
logs.put_log_events(logGroupName=out["instance_id"], logStreamName="agent",
                    logEvents=[{"timestamp": int(time.time() * 1000), "message": "booted"}])
path = sys.argv[1] + "/" + out["instance_id"] + ".json"
open(path + ".tmp", "w").write(json.dumps(out)); os.replace(path + ".tmp", path)
code = json.loads(user_data).get("exit")
if code is not None:
    sys.exit(code)
time.sleep(600)
"""

TRUST = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                  "Principal": {"Service": "ec2.amazonaws.com"}}]}
TAGS = [{"ResourceType": "instance", "Tags": [{"Key": "overcast:managed", "Value": "true"}]}]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    home = tmp_path_factory.mktemp("lc-home")
    out = tmp_path_factory.mktemp("agent-out")
    with environ(OVERCAST_HOME=str(home)):
        lc = LocalCloud(port=0, imds_port=0,
                        agent_command=[sys.executable, "-c", AGENT, str(out)])
        lc.out = out  # type: ignore[attr-defined]
        try:
            # Instances of this module are forked by the warm zygote (test_forkserver.py has
            # the fresh-interpreter fallback).
            assert lc.runner.launcher.wait_ready(90)
            yield lc
        finally:
            lc.stop()


def client(cloud: LocalCloud, service: str, region: str = "us-east-1", **keys: str):
    keys = keys or {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    return boto3.client(service, region_name=region, endpoint_url=cloud.endpoint, **keys)


def launch(cloud: LocalCloud, user_data: dict, region: str = "us-east-1", **kw) -> str:
    iam = client(cloud, "iam")
    try:
        iam.create_role(RoleName="acme", AssumeRolePolicyDocument=json.dumps(TRUST))
        iam.create_instance_profile(InstanceProfileName="acme")
        iam.add_role_to_instance_profile(InstanceProfileName="acme", RoleName="acme")
    except iam.exceptions.EntityAlreadyExistsException:
        pass
    ec2 = client(cloud, "ec2", region)
    image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["overcast-agent-*"]}])
    reply = ec2.run_instances(ImageId=image["Images"][0]["ImageId"], MinCount=1, MaxCount=1,
                              InstanceType="t3.medium", UserData=json.dumps(user_data),
                              IamInstanceProfile={"Name": "acme"}, TagSpecifications=TAGS, **kw)
    return reply["Instances"][0]["InstanceId"]


def state(cloud: LocalCloud, instance_id: str, region: str = "us-east-1") -> str:
    reply = client(cloud, "ec2", region).describe_instances(InstanceIds=[instance_id])
    return reply["Reservations"][0]["Instances"][0]["State"]["Name"]


def test_state_file(cloud):
    assert read_state() == {"endpoint": cloud.endpoint, "imds": cloud.imds_url,
                            "pid": os.getpid(), "enforce_iam": False,
                            "registries": cloud.registries.state()}


def test_instance_boots_with_user_data_and_role_credentials(cloud):
    iid = launch(cloud, {"overcast": 1, "hello": "world"})
    booted = wait(lambda: cloud.runner.booted.get(iid), 5, "agent start")
    assert isinstance(booted.proc, ForkedProcess)
    out = Path(cloud.out) / f"{iid}.json"
    result = json.loads(wait(lambda: out.exists() and out.read_text(), 30, "agent report"))
    assert json.loads(result["user_data"])["hello"] == "world"
    assert result["arn"] == f"arn:aws:sts::123456789012:assumed-role/acme/{iid}"
    assert result["ip"].startswith("127.") and result["ip"] != "127.0.0.1"
    assert not result["has_operator_keys"]
    events = client(cloud, "logs").get_log_events(logGroupName=iid, logStreamName="agent")
    assert [e["message"] for e in events["events"]] == ["booted"]

    pid = booted.proc.pid
    client(cloud, "ec2").terminate_instances(InstanceIds=[iid])
    wait(lambda: booted.proc.poll() is not None, 10, "agent stopped")
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole process group is gone


def test_agent_exit_terminates_instance(cloud):
    iid = launch(cloud, {"overcast": 1, "exit": 3}, region="eu-west-1")
    wait(lambda: state(cloud, iid, "eu-west-1") == "terminated", 30, "instance terminated")
    assert cloud.runner.exit_codes[iid] == 3
    reason = client(cloud, "ec2", "eu-west-1").describe_instances(InstanceIds=[iid])
    assert "exit code 3" in reason["Reservations"][0]["Instances"][0]["StateReason"]["Message"]


def test_image_visible_from_another_account(cloud):
    account = new_aws_account(setup_policy={"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}]},
        ongoing_policy={"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}]})
    keys = {"aws_access_key_id": account["access_key_id"],
            "aws_secret_access_key": account["secret_access_key"]}
    assert client(cloud, "sts", **keys).get_caller_identity()["Account"] == account["account_id"]
    for region in seed.SUPPORTED_REGIONS:
        images = client(cloud, "ec2", region, **keys).describe_images(
            Filters=[{"Name": "name", "Values": ["overcast-agent-*"]}])["Images"]
        assert [i["Name"] for i in images] == ["overcast-agent-0.1.0"]
        assert images[0]["Public"] and images[0]["OwnerId"] == "123456789012"


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
        launch(cloud, {"overcast": 1}, Placement={"AvailabilityZone": "us-east-1c"})
    assert err.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
    cloud.faults.clear()

    iid = launch(cloud, {"overcast": 1}, Placement={"AvailabilityZone": "us-east-1c"},
                 InstanceMarketOptions={"MarketType": "spot"})
    booted = wait(lambda: cloud.runner.booted.get(iid), 5, "agent start")
    cloud.interrupt_spot(iid, notice_seconds=0.2)
    assert cloud.imds.lookup(iid, "meta-data/spot/instance-action")[0] == 200
    wait(lambda: state(cloud, iid) == "terminated", 10, "spot reclaimed")
    wait(lambda: booted.proc.poll() is not None, 10, "agent stopped")
    reason = client(cloud, "ec2").describe_instances(InstanceIds=[iid])
    assert (reason["Reservations"][0]["Instances"][0]["StateReason"]["Code"]
            == "Server.SpotInstanceTermination")
