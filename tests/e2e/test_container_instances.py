"""Local cloud instances are containers of their AMI's image (real dockerd, real user data).

Each test reads back through boto3 (EC2, SSM) and the container engine; every container a test
starts is gone when it ends (terminated, or removed with the local cloud, by label).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import boto3
import docker
import pytest

import overcast
from overcast.localcloud import seed, stockimage
from overcast.localcloud.containers import LABEL_INSTANCE
from overcast.localcloud.main import LocalCloud, new_aws_account
from tests.e2e.helpers import environ, wait
from tests.e2e.stack import cli, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

DEBIAN_12 = "/aws/service/debian/release/12/latest/amd64"


@pytest.fixture(scope="module")
def engine():
    from overcast.localcloud import engine as engine_mod

    try:
        client = engine_mod.connect()
    except engine_mod.EngineUnavailable as exc:
        pytest.fail(f"needs a container engine (make engine): {exc}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory, engine):
    home = tmp_path_factory.mktemp("lc-containers")
    with environ(OVERCAST_HOME=str(home)):
        lc = LocalCloud(port=0, imds_port=0, write_state=False)
        try:
            # The first run on a machine builds the stock image (mmdebstrap, ~0.5-3 min).
            assert lc.runner.containers.ready.wait(600), "the stock image was not ready"
            assert lc.runner.containers.error is None, lc.runner.containers.error
            yield lc
        finally:
            lc.stop()
    left = engine.api.containers(all=True, filters={"label": f"overcast.localcloud={lc.cloud_id}"})
    assert left == [], f"containers left behind: {[c['Names'] for c in left]}"


def client(cloud: LocalCloud, service: str, region: str = "us-east-1", **keys: str):
    keys = keys or {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    return boto3.client(service, region_name=region, endpoint_url=cloud.endpoint, **keys)


def debian_ami(cloud: LocalCloud, region: str = "us-east-1") -> str:
    return client(cloud, "ssm", region).get_parameter(Name=DEBIAN_12)["Parameter"]["Value"]


def launch(cloud: LocalCloud, user_data: str | bytes, image_id: str | None = None,
           behavior: str = "terminate") -> str:
    ec2 = client(cloud, "ec2")
    return ec2.run_instances(ImageId=image_id or debian_ami(cloud), MinCount=1, MaxCount=1,
                             InstanceType="t3.micro", UserData=user_data,
                             InstanceInitiatedShutdownBehavior=behavior,
                             )["Instances"][0]["InstanceId"]


def state(cloud: LocalCloud, iid: str) -> str:
    found = client(cloud, "ec2").describe_instances(InstanceIds=[iid])
    return found["Reservations"][0]["Instances"][0]["State"]["Name"]


def wait_state(cloud: LocalCloud, iid: str, want: str, timeout: float = 60) -> None:
    try:
        wait(lambda: state(cloud, iid) == want, timeout, f"{iid} to be {want}")
    except TimeoutError:
        raise AssertionError(f"{iid} is {state(cloud, iid)}, not {want}; console:\n"
                             f"{console(cloud, iid)}") from None


def console(cloud: LocalCloud, iid: str) -> str:
    return client(cloud, "ec2").get_console_output(InstanceId=iid).get("Output") or ""


def containers_of(engine, iid: str) -> list[dict]:
    """The engine's list entries (no inspect: a container may go between list and inspect)."""
    return engine.api.containers(all=True, filters={"label": f"{LABEL_INSTANCE}={iid}"})


def test_stock_debian_ami_is_found_through_ssm_in_every_region(cloud):
    allow = {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    other = new_aws_account(setup_policy=allow, ongoing_policy=allow)
    keys = {"aws_access_key_id": other["access_key_id"],
            "aws_secret_access_key": other["secret_access_key"]}
    for region in seed.SUPPORTED_REGIONS:
        for creds in ({}, keys):
            ami = client(cloud, "ssm", region, **creds).get_parameter(
                Name=DEBIAN_12)["Parameter"]
            assert ami["DataType"] == "aws:ec2:image"
            image = client(cloud, "ec2", region, **creds).describe_images(
                ImageIds=[ami["Value"]])["Images"][0]
            assert image["OwnerId"] == stockimage.DEBIAN_OWNER
            assert image["Name"].startswith("debian-12-amd64-")
            assert image["State"] == "available"
    by_path = client(cloud, "ssm").get_parameters_by_path(
        Path="/aws/service/debian/release/12/latest")["Parameters"]
    assert [p["Name"] for p in by_path] == [DEBIAN_12]


def test_script_user_data_prints_to_console_and_poweroff_terminates(cloud, engine):
    iid = launch(cloud, "#!/bin/sh\necho marker-$(id -u)-booted\npoweroff\n")
    wait_state(cloud, iid, "terminated", 60)
    reason = client(cloud, "ec2").describe_instances(InstanceIds=[iid])[
        "Reservations"][0]["Instances"][0]["StateReason"]
    assert reason["Code"] == "Client.InstanceInitiatedShutdown"
    assert "marker-0-booted" in console(cloud, iid)  # ran as root, output on the console
    wait(lambda: not containers_of(engine, iid), 20, "the container to be removed")


def test_cloud_config_write_files_runcmd_and_gzip(cloud):
    config = textwrap.dedent("""\
        #cloud-config
        bootcmd:
          - echo bootcmd-ran > /tmp/order
        write_files:
          - path: /etc/overcast-test/hello.txt
            content: written-by-cloud-config
            permissions: '0600'
        runcmd:
          - cat /etc/overcast-test/hello.txt
          - [sh, -c, "stat -c perm-%a /etc/overcast-test/hello.txt; cat /tmp/order"]
          - poweroff
        """)
    iid = launch(cloud, gzip.compress(config.encode()))  # gzip'd user data, as EC2 allows
    wait_state(cloud, iid, "terminated", 60)
    out = console(cloud, iid)
    assert "written-by-cloud-config" in out
    assert "perm-600" in out and "bootcmd-ran" in out


def test_instance_sees_nothing_of_the_control_plane_and_reaches_the_package_index(cloud):
    repo = str(Path(overcast.__file__).resolve().parents[1])
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    script = textwrap.dedent(f"""\
        #!/bin/sh
        for p in {repo} {sys.prefix} {os.environ.get("OVERCAST_HOME", "/nonexistent")}; do
          test -e "$p" && echo "visible:$p" || echo "absent:$p"
        done
        python3 -c 'import sys; print("prefix:" + sys.prefix)'
        curl -s -o /dev/null -w 'endpoint-status:%{{http_code}}\\n' "$AWS_ENDPOINT_URL/"
        python3 -c 'import importlib.util as u; print("overcast-module:", u.find_spec("overcast"))'
        python3 - <<'EOF'
        import json, os, urllib.request
        base = os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"]
        ip = urllib.request.urlopen(base + "/latest/meta-data/local-ipv4").read().decode()
        print("ipv4:" + ip)
        r = urllib.request.urlopen("{index}/pip/", timeout=60)
        print("index-status:", r.status)
        EOF
        poweroff
        """)
    iid = launch(cloud, script)
    wait_state(cloud, iid, "terminated", 120)
    out = console(cloud, iid)
    assert f"absent:{repo}" in out and f"absent:{sys.prefix}" in out, out
    assert "visible:" not in out, out
    assert "prefix:/usr" in out and "overcast-module: None" in out, out
    assert f"ipv4:{cloud.runner.addresses[iid]}" in out, out
    assert "index-status: 200" in out, out
    assert re.search(r"endpoint-status:[1-5]\d\d", out), out  # the local cloud's AWS endpoint


def test_create_image_of_an_instance_boots_its_files(cloud, engine):
    ec2 = client(cloud, "ec2")
    builder = launch(cloud, "#!/bin/sh\necho baked-$(date +%s) > /opt/baked.txt\npoweroff\n",
                     behavior="stop")
    wait_state(cloud, builder, "stopped", 60)
    assert containers_of(engine, builder), "a stopped instance keeps its disk"
    ami = ec2.create_image(InstanceId=builder, Name="baked-test",
                           TagSpecifications=[{"ResourceType": "image",
                                               "Tags": [{"Key": "k", "Value": "v"}]},
                                              {"ResourceType": "snapshot",
                                               "Tags": [{"Key": "k", "Value": "v"}]}])["ImageId"]
    first = ec2.describe_images(ImageIds=[ami])["Images"][0]["State"]
    assert first in ("pending", "available")
    ec2.get_waiter("image_available").wait(ImageIds=[ami],
                                           WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    ec2.terminate_instances(InstanceIds=[builder])
    child = launch(cloud, "#!/bin/sh\ncat /opt/baked.txt\npoweroff\n", image_id=ami)
    wait_state(cloud, child, "terminated", 60)
    assert "baked-" in console(cloud, child)
    wait(lambda: not containers_of(engine, builder) and not containers_of(engine, child), 20,
         "both containers to be removed")
    ec2.deregister_image(ImageId=ami)
    wait(lambda: not engine.images.list(name=f"overcast-localcloud/ami:{ami}"), 20,
         "the image to be removed")


def test_terminate_removes_the_container(cloud, engine):
    iid = launch(cloud, "#!/bin/sh\necho up-and-waiting\n")
    wait(lambda: "boot finished" in console(cloud, iid), 60, "the instance to boot")
    assert containers_of(engine, iid)[0]["State"] == "running"
    client(cloud, "ec2").terminate_instances(InstanceIds=[iid])
    wait(lambda: not containers_of(engine, iid), 30, "the container to be removed")
    assert "up-and-waiting" in console(cloud, iid)  # the console outlives the instance


def start_cli_cloud(tmp_path):
    port = free_port()
    env = {**os.environ, "OVERCAST_HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    with open(tmp_path / "local-cloud.log", "wb") as log:
        proc = subprocess.Popen(cli("local-cloud", "--port", str(port), "--imds-port",
                                    str(free_port())), env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    wait(lambda: (tmp_path / "run" / "localcloud.json").exists(), 120, "the local cloud")
    return proc, f"http://127.0.0.1:{port}"


def run_two(endpoint: str, home) -> list[str]:
    # `overcast local-cloud` enforces IAM: only the keys its IAM made sign.
    operator = json.loads((home / "run" / "localcloud-operator.json").read_text())
    kw = {"region_name": "us-east-1", "endpoint_url": endpoint,
          "aws_access_key_id": operator["access_key_id"],
          "aws_secret_access_key": operator["secret_access_key"]}
    ami = boto3.client("ssm", **kw).get_parameter(Name=DEBIAN_12)["Parameter"]["Value"]
    return [i["InstanceId"] for i in boto3.client("ec2", **kw).run_instances(
        ImageId=ami, MinCount=2, MaxCount=2, InstanceType="t3.micro",
        UserData="#!/bin/sh\necho running\n")["Instances"]]


@pytest.mark.parametrize("how", ["stop", "crash"])
def test_local_cloud_stop_or_crash_leaves_no_containers(tmp_path, engine, cloud, how):
    """SIGTERM: the local cloud removes its containers. SIGKILL: the next local cloud to
    start removes them (here: the module's, asked to look again)."""
    proc, endpoint = start_cli_cloud(tmp_path)
    ids: list[str] = []
    try:
        ids = run_two(endpoint, tmp_path)
        wait(lambda: all(containers_of(engine, i) for i in ids), 90, "two containers")
        os.killpg(proc.pid, signal.SIGTERM if how == "stop" else signal.SIGKILL)
        proc.wait(60)
        if how == "crash":
            assert all(containers_of(engine, i) for i in ids)
            cloud.runner.containers._remove_orphans()
        assert all(not containers_of(engine, i) for i in ids)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for i in ids:
            for c in containers_of(engine, i):
                engine.api.remove_container(c["Id"], force=True)


def test_no_bridge_network():
    assert not Path("/sys/class/net/docker0").exists()
    names = {n.name for n in docker.from_env().networks.list()}
    assert "bridge" not in names



def test_stop_keeps_the_disk_and_start_boots_it_again(cloud, engine):
    ec2 = client(cloud, "ec2")
    iid = launch(cloud, "#!/bin/sh\necho ran-once >> /root/runs\n", behavior="stop")
    wait(lambda: "boot finished" in console(cloud, iid), 60, "the instance to boot")
    ec2.stop_instances(InstanceIds=[iid])
    wait(lambda: containers_of(engine, iid) and containers_of(engine, iid)[0]["State"] == "exited",
         30, "the container to stop")
    ec2.start_instances(InstanceIds=[iid])
    wait(lambda: "user data already ran" in console(cloud, iid), 60, "the second boot")
    exec_out = engine.containers.get(containers_of(engine, iid)[0]["Id"]).exec_run(
        ["cat", "/root/runs"]).output.decode()
    assert exec_out == "ran-once\n"  # same disk; user data ran once per instance
    ec2.terminate_instances(InstanceIds=[iid])
    wait(lambda: not containers_of(engine, iid), 30, "the container to be removed")


def test_instance_profile_credentials_reach_the_container(cloud):
    iam = client(cloud, "iam")
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRole",
        "Principal": {"Service": "ec2.amazonaws.com"}}]}
    iam.create_role(RoleName="box-role", AssumeRolePolicyDocument=json.dumps(trust))
    iam.create_instance_profile(InstanceProfileName="box-profile")
    iam.add_role_to_instance_profile(InstanceProfileName="box-profile", RoleName="box-role")
    script = textwrap.dedent("""\
        #!/bin/sh
        python3 - <<'EOF'
        import json, os, urllib.request
        base = os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"] + "/latest/meta-data/iam/"
        role = urllib.request.urlopen(base + "security-credentials/").read().decode()
        creds = json.load(urllib.request.urlopen(base + "security-credentials/" + role))
        print("role:" + role, "has-key:" + str(bool(creds["AccessKeyId"])))
        EOF
        poweroff
        """)
    iid = client(cloud, "ec2").run_instances(
        ImageId=debian_ami(cloud), MinCount=1, MaxCount=1, InstanceType="t3.micro",
        UserData=script, InstanceInitiatedShutdownBehavior="terminate",
        IamInstanceProfile={"Name": "box-profile"})["Instances"][0]["InstanceId"]
    wait_state(cloud, iid, "terminated", 60)
    assert "role:box-role has-key:True" in console(cloud, iid)
