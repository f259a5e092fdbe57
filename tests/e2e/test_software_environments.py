"""Software environments on the current local cloud: the env commands through the real
server, the local ECR (login from GetAuthorizationToken, pushes listed by describe_images),
the Docker Hub stand-in at backend setup, `--container` images checked for dask and
distributed, and version skew shown to the user.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import secrets
import subprocess
import sys
import tarfile
import textwrap

import httpx
import pytest
from click.testing import CliRunner

from overcast.cli.main import cli
from overcast.envs import inspect
from tests.e2e.engine import engine

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
LABEL = "overcast.envs.e2e"


def run(*args: str):
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_env_commands_through_the_server(overcast_config):
    name = f"e2e-{secrets.token_hex(3)}"
    code, out = run("env", "create", name, "--pip", "six==1.16.0", "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["version"] == 1 and doc["kind"] == "pip" and doc["created"]
    assert "six==1.16.0" in doc["lock"] and "\ndistributed==" in doc["lock"]
    assert len(doc["lock_hash"]) == 64
    code, out = run("env", "create", name, "--pip", "six==1.16.0")
    assert code == 0 and "Unchanged" in out
    code, out = run("env", "ls", "--json")
    assert code == 0 and json.loads(out)[name]["version"] == 1
    code, out = run("env", "show", name)
    assert code == 0 and "six==1.16.0" in out and doc["lock_hash"] in out
    code, out = run("env", "create", name, "--pip", "six==99.0.0")
    assert code == 1 and "six" in out and "resolve" in out
    code, out = run("env", "delete", name)
    assert code == 0 and "1 version" in out
    code, out = run("env", "show", name)
    assert code == 1 and "No software environment" in out


# -- the local ECR -----------------------------------------------------------------------------
def registry_push(base: str, auth: tuple[str, str], path: str, tag: str) -> str:
    """Push a one-layer image with the Distribution API (what `docker push` does); returns
    the manifest digest."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w:gz") as tar:
        data = f"hello {tag}\n".encode()
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    blobs = {"layer": layer.getvalue(),
             "config": json.dumps({"architecture": "amd64", "os": "linux",
                                   "rootfs": {"type": "layers", "diff_ids": []}}).encode()}
    digests = {}
    with httpx.Client(base_url=base, auth=auth, timeout=20) as http:
        for key, blob in blobs.items():
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            start = http.post(f"/v2/{path}/blobs/uploads/")
            assert start.status_code == 202, start.text
            location = start.headers["Location"]
            sep = "&" if "?" in location else "?"  # keep the upload's own _state query
            put = http.put(f"{location}{sep}digest={digest}", content=blob,
                           headers={"Content-Type": "application/octet-stream"})
            assert put.status_code == 201, put.text
            digests[key] = (digest, len(blob))
        manifest = {"schemaVersion": 2,
                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                               "digest": digests["config"][0], "size": digests["config"][1]},
                    "layers": [{"mediaType":
                                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                                "digest": digests["layer"][0], "size": digests["layer"][1]}]}
        r = http.put(f"/v2/{path}/manifests/{tag}", content=json.dumps(manifest),
                     headers={"Content-Type": manifest["mediaType"]})
        assert r.status_code == 201, r.text
        return r.headers["Docker-Content-Digest"]


@pytest.fixture
def repository(aws):
    ecr = aws("ecr")
    name = f"envs-e2e-{secrets.token_hex(3)}"
    uri = ecr.create_repository(repositoryName=name)["repository"]["repositoryUri"]
    yield ecr, name, uri
    ecr.delete_repository(repositoryName=name, force=True)


def ecr_login(ecr) -> tuple[str, str, str]:
    auth = ecr.get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(auth["authorizationToken"]).decode().partition(":")
    return user, password, auth["proxyEndpoint"]


def test_ecr_login_works_against_the_registry_and_pushes_are_listed(repository):
    ecr, name, uri = repository
    user, password, endpoint = ecr_login(ecr)
    host = endpoint.split("://")[1]
    assert uri.startswith(host + "/") and user == "AWS"
    assert httpx.get(endpoint + "/v2/", timeout=5).status_code == 401
    assert httpx.get(endpoint + "/v2/", auth=(user, "wrong"), timeout=5).status_code == 401
    assert httpx.get(endpoint + "/v2/", auth=(user, password), timeout=5).status_code == 200
    assert ecr.describe_images(repositoryName=name)["imageDetails"] == []
    path = uri.split("/", 1)[1]
    digest = registry_push(endpoint, (user, password), path, "a" * 64)
    images = ecr.describe_images(repositoryName=name)["imageDetails"]
    assert [(i["imageTags"], i["imageDigest"]) for i in images] == [(["a" * 64], digest)]
    listed = ecr.list_images(repositoryName=name)["imageIds"]
    assert listed == [{"imageDigest": digest, "imageTag": "a" * 64}]


def test_docker_push_to_the_local_ecr(repository, tmp_path):
    """The real client: `docker login` with the ECR token, `docker push`, then boto3 lists it."""
    ecr, name, uri = repository
    with engine() as docker:
        if docker is None:
            pytest.skip("no container engine here (docker.io)")
        user, password, endpoint = ecr_login(ecr)
        env = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "docker-config")}
        tag = f"{uri}:{'b' * 64}"
        tar = tmp_path / "rootfs.tar"
        with tarfile.open(tar, "w") as t:
            (tmp_path / "hello.txt").write_text("hello\n")
            t.add(tmp_path / "hello.txt", "hello.txt")
        try:
            subprocess.run([*docker, "import", "--change", f"LABEL {LABEL}=1", str(tar), tag],
                           check=True, capture_output=True, timeout=60)
            login = subprocess.run([*docker, "login", "--username", user, "--password-stdin",
                                    endpoint.split("://")[1]], input=password, text=True,
                                   capture_output=True, env=env, timeout=30)
            assert login.returncode == 0, login.stderr
            push = subprocess.run([*docker, "push", tag], capture_output=True, text=True,
                                  env=env, timeout=120)
            assert push.returncode == 0, push.stderr
            tags = [t for i in ecr.describe_images(repositoryName=name)["imageDetails"]
                    for t in i["imageTags"]]
            assert tags == ["b" * 64]
        finally:
            subprocess.run([*docker, "rmi", "-f", tag], capture_output=True, timeout=60)


# -- Docker Hub's stand-in ---------------------------------------------------------------------
def test_docker_hub_token_is_checked_at_backend_setup_and_never_shown(stack):
    hub = json.loads((stack.home / "run" / "localcloud-dockerhub.json").read_text())
    host = hub["url"].split("://")[1]
    headers = {"Authorization": f"Bearer {stack.token}"}
    # A team account of its own: the shared account's backend stays the hosted default.
    team = httpx.post(f"{stack.url}/api/v1/teams", headers=headers, timeout=10,
                      json={"name": f"hub-{secrets.token_hex(3)}"}).json()["slug"]
    url = f"{stack.url}/api/v1/accounts/{team}/backend"
    body = {"backend": "aws", "aws_region": "us-east-1",
            # Well-formed but unknown keys: the registry is asked before AWS is.
            "aws_access_key_id": "AKIA" + "Z" * 16, "aws_secret_access_key": "x" * 40,
            "registry_type": "docker_hub", "registry_username": hub["username"],
            "registry_repository": "overcast/envs"}
    wrong = httpx.put(url, headers=headers, timeout=30,
                      json=body | {"registry_access_token": "dckr_pat_wrong"})
    assert wrong.status_code == 400 and host in wrong.json()["detail"]
    assert "dckr_pat_wrong" not in wrong.text
    assert httpx.get(url, headers=headers, timeout=10).json()["kind"] == "hosted"
    right = httpx.put(url, headers=headers, timeout=30,
                      json=body | {"registry_access_token": hub["token"]})
    # The registry took the token; what is refused now is the unknown AWS key, not the login.
    assert right.status_code == 400 and host not in right.json()["detail"], right.text
    assert "AKIA" in right.json()["detail"] or "key" in right.json()["detail"].lower()
    texts = [wrong.text, right.text, httpx.get(url, headers=headers, timeout=10).text,
             httpx.get(f"{stack.url}/api/v1/accounts/{team}/notifications",
                       headers=headers, timeout=10).text]
    texts += [p.read_text(errors="replace") for p in stack.home.rglob("*.log")]
    assert not any(hub["token"] in t for t in texts)
    assert httpx.get(url, headers=headers, timeout=10).json()["kind"] == "hosted"


# -- --container images ------------------------------------------------------------------------
def python_only_rootfs(path) -> None:
    """A root file system with this machine's Debian python3.11 and its standard library
    only: Python runs, dask and distributed are not there."""
    binary = "/usr/bin/python3.11"
    libs = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    files = [binary] + [p for p in libs.split() if p.startswith("/")]
    with tarfile.open(path, "w") as tar:
        for f in files:
            tar.add(os.path.realpath(f), f.lstrip("/"))
        tar.add("/usr/lib/python3.11", "usr/lib/python3.11",
                filter=lambda i: None if "__pycache__" in i.name else i)
        link = tarfile.TarInfo("usr/bin/python3")
        link.type, link.linkname = tarfile.SYMTYPE, "python3.11"
        tar.addfile(link)


def test_container_images_without_dask_are_refused_naming_what_is_missing(tmp_path):
    if not os.path.exists("/usr/bin/python3.11"):
        pytest.skip("needs Debian's python3.11 to make an image from")
    with engine() as docker:
        if docker is None:
            pytest.skip("no container engine here (docker.io)")
        image = f"overcast-envs-e2e/python-only:{secrets.token_hex(4)}"
        python_only_rootfs(tmp_path / "rootfs.tar")
        try:
            subprocess.run([*docker, "import", "--change", f"LABEL {LABEL}=1",
                            str(tmp_path / "rootfs.tar"), image], check=True,
                           capture_output=True, timeout=120)
            with pytest.raises(inspect.ImageRefused) as err:
                inspect.check_image(image, docker)
            message = str(err.value)
            assert "no dask and no distributed" in message and image in message
            assert "3.11" in message
            # An image without Python at all: named as such.
            with tarfile.open(tmp_path / "empty.tar", "w") as tar:
                info = tarfile.TarInfo("hello.txt")
                tar.addfile(info, io.BytesIO(b""))
            subprocess.run([*docker, "import", "--change", f"LABEL {LABEL}=1",
                            str(tmp_path / "empty.tar"), image + "-bare"], check=True,
                           capture_output=True, timeout=60)
            with pytest.raises(inspect.ImageRefused, match="has no python3"):
                inspect.check_image(image + "-bare", docker)
        finally:
            subprocess.run([*docker, "rmi", "-f", image, image + "-bare"], capture_output=True,
                           timeout=60)


# -- version skew ------------------------------------------------------------------------------
SKEWED_CLIENT = textwrap.dedent("""
    import cloudpickle, dask, overcast
    from distributed import Client
    with dask.config.set({"overcast.server": %(server)r, "overcast.token": %(token)r,
                          "overcast.account": %(account)r}):
        with overcast.Cluster(n_workers=1, progress=False) as cluster:
            with Client(cluster) as client:
                print("RESULT", client.submit(lambda x: x + 1, 1).result(), flush=True)
""")


def test_version_skew_is_shown_before_any_task(stack, tmp_path):
    """A client with another cloudpickle than the cluster's sees the table on start."""
    target = tmp_path / "older"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                          "--target", str(target), "cloudpickle==3.1.2"],
                         capture_output=True, text=True, timeout=180)
    if pip.returncode != 0:
        pytest.skip(f"cannot install another cloudpickle here: {pip.stderr[-300:]}")
    code = SKEWED_CLIENT % {"server": stack.url, "token": stack.token,
                            "account": stack.account}
    env = {**os.environ, "PYTHONPATH": str(target), "OVERCAST_HOME": str(stack.home),
           "AWS_ENDPOINT_URL": stack.endpoint}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Client and cluster versions differ" in done.stderr
    table = done.stderr.split("Client and cluster versions differ", 1)[1]
    assert "cloudpickle" in table and "3.1.2" in table and "3.1.3" in table
    # the table comes before the first task's result
    assert "RESULT 2" in done.stdout


def test_registries_run_and_stop_with_the_local_cloud(tmp_path, monkeypatch):
    from overcast.localcloud.main import LocalCloud
    from tests.e2e.stack import free_port

    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    cloud = LocalCloud(port=free_port(), imds_port=free_port(), seed=False, write_state=False)
    try:
        servers = [cloud.registries.ecr, cloud.registries.hub]
        assert all(s is not None and s.status() == 401 for s in servers)
        assert cloud.registries.hub.status("overcast", cloud.registries.hub_token) == 200
    finally:
        cloud.stop()
    assert all(s.status() is None for s in servers)  # nothing answers any more
    assert not any(s._dir.exists() for s in servers)  # storage removed


def test_a_killed_local_cloud_leaves_no_registry(tmp_path):
    """SIGKILL of `overcast local-cloud`: its registries die with it (PR_SET_PDEATHSIG)."""
    import time

    from tests.e2e.stack import Stack

    stack = Stack(tmp_path)
    urls: list[str] = []
    try:
        stack.start_cloud()
        info = json.loads((tmp_path / "run" / "localcloud.json").read_text())
        urls = list(info["registries"].values())
        assert all(httpx.get(u + "/v2/", timeout=5).status_code == 401 for u in urls)
        stack.cloud.kill9()
        deadline = time.monotonic() + 20

        def down(url: str) -> bool:
            try:
                httpx.get(url + "/v2/", timeout=1)
                return False
            except httpx.TransportError:
                return True

        while not all(down(u) for u in urls):
            assert time.monotonic() < deadline, "a registry outlived its local cloud"
            time.sleep(0.2)
    finally:
        stack.stop()
        # Their storage stays until the next local cloud drops it; this test removes its own.
        import shutil
        import tempfile
        from pathlib import Path

        hosts = [u.split("://")[1] for u in urls]
        for folder in Path(tempfile.gettempdir()).glob("overcast-registry-*"):
            config = folder / "config.yml"
            if config.exists() and any(h in config.read_text() for h in hosts):
                shutil.rmtree(folder, ignore_errors=True)
