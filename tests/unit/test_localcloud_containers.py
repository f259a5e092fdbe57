"""The container boot path's pure parts: user data decoding, cloud-config, egress settings,
the stock AMI's identity, which SSM paths name Debian's parameters, and what GetConsoleOutput
answers for an instance container."""

from __future__ import annotations

import base64
import gzip
import re
import signal
import subprocess
import sys

import boto3
from docker.types import Mount

from overcast.localcloud import containers, egress, instance_init, motoimages, stockimage
from overcast.localcloud.motoimages import _wants_debian


def test_user_data_is_decoded_like_ec2_passes_it():
    script = b"#!/bin/sh\necho hi\n"
    assert instance_init.decode(script) == script
    assert instance_init.decode(gzip.compress(script)) == script
    assert instance_init.decode(base64.b64encode(script)) == script
    assert instance_init.decode(base64.b64encode(gzip.compress(script))) == script
    assert instance_init.decode(b"#cloud-config\n{}") == b"#cloud-config\n{}"


def test_write_files_content_encodings_permissions_and_append(tmp_path):
    target = tmp_path / "d" / "f.txt"
    instance_init.write_files([
        {"path": str(target), "content": "one\n", "permissions": "0600"},
        {"path": str(target), "content": base64.b64encode(b"two\n").decode(),
         "encoding": "b64", "append": True, "permissions": "0600"},
        {"path": str(tmp_path / "g"), "encoding": "gz+b64",
         "content": base64.b64encode(gzip.compress(b"zipped")).decode()},
    ])
    assert target.read_text() == "one\ntwo\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "g").read_bytes() == b"zipped"


def test_egress_env_passes_registry_settings_but_no_host_paths(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "https://index.example/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    monkeypatch.setenv("PIP_CERT", egress.CA_BUNDLE)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "never-inside")
    env = egress.egress_env()
    assert env["PIP_INDEX_URL"] == "https://index.example/simple"
    assert env["PIP_CERT"] == egress.CA_BUNDLE
    assert "PIP_FIND_LINKS" not in env and "AWS_SECRET_ACCESS_KEY" not in env


def test_mounts_are_read_only_and_only_the_init_file_of_overcast(tmp_path, monkeypatch):
    monkeypatch.setattr(egress, "PIP_CACHE", tmp_path / "mirror" / "pip")
    mounts = egress.egress_mounts()
    # Read-only, except the package cache (the VPC mirror's stand-in), which is no code of ours.
    cache = mounts.pop(str(tmp_path / "mirror" / "pip"))
    assert cache == {"bind": "/root/.cache/pip", "mode": "rw"}
    assert all(m["mode"] == "ro" for m in mounts.values())
    ours = [src for src in mounts if "overcast" in src]
    assert ours == [str(egress.INIT)]


def test_host_files_are_bind_mounts_never_volumes_an_image_would_keep():
    """docker-py's `volumes=` also declares each target a VOLUME, which CreateImage (docker
    commit) bakes into the AMI: its next instances then failed to be created."""
    mounts = egress.bind_mounts({"/host/ca.crt": {"bind": "/etc/ca.crt", "mode": "ro"},
                                     "/host/cache": {"bind": "/root/.cache/pip", "mode": "rw"}})
    assert mounts == [Mount("/etc/ca.crt", "/host/ca.crt", type="bind", read_only=True),
                      Mount("/root/.cache/pip", "/host/cache", type="bind", read_only=False)]


class _Consoles:
    def __init__(self, outputs):
        self.outputs = outputs

    def console(self, instance_id):
        return self.outputs.get(instance_id)


def test_console_output_is_the_containers_or_none_never_motos_sample(aws, monkeypatch):
    ec2 = boto3.client("ec2", region_name="us-east-1")
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    ids = [i["InstanceId"] for i in ec2.run_instances(ImageId=ami, MinCount=3,
                                                      MaxCount=3)["Instances"]]
    motoimages._console_output()
    monkeypatch.setattr(motoimages, "_containers",
                        _Consoles({ids[0]: b"Traceback: agent failed\n", ids[1]: b""}))
    printed = ec2.get_console_output(InstanceId=ids[0])
    assert printed["Output"] == "Traceback: agent failed\n"  # boto3 decodes the base64
    nothing = ec2.get_console_output(InstanceId=ids[1])  # its container never ran
    assert nothing["InstanceId"] == ids[1] and "Output" not in nothing
    # Not an instance of the local cloud's containers: moto's own answer.
    assert "Output" in ec2.get_console_output(InstanceId=ids[2])


def test_an_instance_whose_container_never_ran_printed_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    keeper = containers.ContainerInstances(runner=None, cloud_id="t")
    keeper.boxes["i-0failed"] = containers.Box("i-0failed", "123456789012", "us-east-1",
                                               state="gone")
    keeper.consoles["i-0ended"] = b"powering off\n"
    assert keeper.console("i-0failed") == b""
    assert keeper.console("i-0ended") == b"powering off\n"
    assert keeper.console("i-0unknown") is None


def test_stock_ami_identity_is_stable_and_named_like_debians():
    assert stockimage.ami_id() == stockimage.ami_id()
    assert re.fullmatch(r"ami-0[0-9a-f]{16}", stockimage.ami_id())
    assert re.fullmatch(r"debian-12-amd64-\d{8}-\d+", stockimage.AMI_NAME)
    doc = stockimage.ami_document()
    assert doc["owner_id"] == "136693071363" and doc["public"] is True
    assert stockimage.image_tag().endswith(":" + stockimage.cache_key())


def test_debian_parameters_load_for_their_paths_only():
    assert _wants_debian("/aws/service/debian/release/12/latest/amd64")
    assert _wants_debian("/aws/service/debian")
    assert _wants_debian("/aws/service/")
    assert not _wants_debian("/aws/service/ami-amazon-linux-latest/x")
    assert not _wants_debian("/my/app")
    assert not _wants_debian("/")


def test_power_off_signals_every_process_only_as_pid_1(monkeypatch):
    sent = []
    monkeypatch.setattr(instance_init.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    monkeypatch.setattr(instance_init.os, "getpid", lambda: 4242)
    instance_init.signal_all(signal.SIGTERM)  # kill(-1) outside a container: the whole machine
    assert sent == []
    monkeypatch.setattr(instance_init.os, "getpid", lambda: 1)
    instance_init.signal_all(signal.SIGTERM)
    assert sent == [(-1, signal.SIGTERM)]
    assert containers.GRACE > instance_init.SHUTDOWN_GRACE  # the engine kills only after init


# In a process of its own: waitpid(-1) reaps any child, pytest's too.
WAIT = """
import subprocess, sys, time
from overcast.localcloud import instance_init
child = subprocess.Popen(["sleep", sys.argv[1]], stdout=subprocess.DEVNULL)
started = time.monotonic()
print(instance_init.wait_for_processes(float(sys.argv[2])), round(time.monotonic() - started, 1))
child.kill()
"""


def test_power_off_waits_for_the_processes_then_gives_up():
    def run(sleep: str, grace: str) -> list[str]:
        return subprocess.run([sys.executable, "-c", WAIT, sleep, grace], capture_output=True,
                              text=True, timeout=30, check=True).stdout.split()

    done, took = run("0.3", "10")
    assert done == "True" and float(took) < 5  # as soon as the last process is gone
    done, took = run("30", "0.5")
    assert done == "False" and float(took) < 5
