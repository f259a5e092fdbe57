"""Software environment images built on a builder instance and run by the cluster's VMs.

A client whose environment has an extra small pure-Python package at an older version
starts `Cluster(n_workers=1)` with package sync: the image is built in the account (a
builder instance of the overcast VM image), pushed to the account's ECR repository (the
local registry behind it), and the worker runs dask inside it, so the package's version on
the worker is the client's. A second cluster of the same environment reuses the image;
a changed environment (the package one version newer) builds a new one.

The client runs in a slim environment (the client's dependency closure, linked from this
venv), so the image holds ~40 packages, not this venv's ~140: the test stays quick.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import time
from importlib import metadata
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement

from tests.e2e.engine import engine

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]
EXTRA = ("appdirs", "1.4.3")  # tiny, pure Python, older than the newest (1.4.4)
CHANGED = "1.4.4"  # the changed spec: a new lock, a new image
CLIENT_ROOTS = ("dask", "distributed", "cryptography", "rich", "httpx", "platformdirs",
                "pyyaml", "packaging")
REPO = Path(__file__).resolve().parents[2]

CLIENT = textwrap.dedent("""
    import importlib.metadata, json, dask, overcast
    from distributed import Client
    with dask.config.set({"overcast.server": %(server)r, "overcast.token": %(token)r,
                          "overcast.account": %(account)r, "overcast.package-sync": True}):
        for n in range(%(clusters)d):
            with overcast.Cluster(n_workers=1, progress=False, start_timeout=1000) as cluster:
                with Client(cluster) as client:
                    def versions():
                        import importlib.metadata as m, os, sys, psutil
                        # Modules of the image whose byte code this process wrote as it
                        # booted (the image should carry it).
                        booted = psutil.Process().create_time()
                        fresh = sorted(n for n, mod in list(sys.modules.items())
                                       if str(getattr(mod, "__cached__", "")).startswith(
                                           "/opt/env/") and os.path.exists(mod.__cached__)
                                       and os.path.getmtime(mod.__cached__) >= booted)
                        seen = {p: m.version(p) for p in ("appdirs", "dask", "distributed")}
                        return {**seen, "compiled_at_boot": fresh}
                    seen = client.run(versions)
                    print("RESULT", json.dumps({"cluster": cluster.name,
                          "workers": seen}), flush=True)
""")


def closure(roots: tuple[str, ...]) -> list[metadata.Distribution]:
    """The installed distributions `roots` need (no extras), each once."""
    seen: dict[str, metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = dist
        for req in dist.requires or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return list(seen.values())


def slim_site(path: Path) -> None:
    """A site directory of links to the client's closure (packages and their dist-info)."""
    path.mkdir()
    for dist in closure(CLIENT_ROOTS):
        base = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            if (base / top).exists() and not (path / top).exists():
                (path / top).symlink_to(base / top)


@pytest.fixture(scope="module")
def client_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("client-env")
    slim_site(root / "site")
    pip_target(root / "extra", "==".join(EXTRA))
    return root


def pip_target(target: Path, requirement: str) -> None:
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                          "--target", str(target), requirement],
                         capture_output=True, text=True, timeout=180)
    if pip.returncode != 0:
        pytest.skip(f"cannot install {requirement} here: {pip.stderr[-300:]}")


def run_client(stack, env_root: Path, clusters: int, account: str | None = None,
               extra: str = "extra") -> list[dict]:
    code = CLIENT % {"server": stack.url, "token": stack.token,
                     "account": account or stack.account, "clusters": clusters}
    env = {**os.environ, "OVERCAST_HOME": str(stack.home), "AWS_ENDPOINT_URL": stack.endpoint,
           "PYTHONPATH": os.pathsep.join([str(env_root / extra), str(env_root / "site"),
                                          str(REPO)])}
    # -S: no site-packages of this venv, only the slim environment above.
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                          env=env, timeout=1100, cwd=str(env_root))
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads(line[7:]) for line in done.stdout.splitlines()
            if line.startswith("RESULT ")]


def notifications(stack, account: str | None = None) -> list[dict]:
    r = httpx.get(f"{stack.url}/api/v1/accounts/{account or stack.account}/notifications",
                  params={"limit": 500}, headers={"Authorization": f"Bearer {stack.token}"},
                  timeout=10)
    return r.json()


def test_package_sync_builds_the_image_and_the_worker_runs_it(stack, aws, client_env):
    with engine() as docker:
        if docker is None:
            pytest.skip("no container engine here (docker.io)")
    first = run_client(stack, client_env, clusters=2)
    assert len(first) == 2
    for result in first:
        ((appdirs, dask_v, distributed_v),) = [
            (v["appdirs"], v["dask"], v["distributed"]) for v in result["workers"].values()]
        assert appdirs == EXTRA[1]  # the client's version, not the VM image's (none there)
        assert (dask_v, distributed_v) == (metadata.version("dask"),
                                           metadata.version("distributed"))
    # The image carries the byte code of what its VMs import to boot (dask, distributed,
    # numpy, the agent's helpers ...): before, each VM compiled some 600-1,000 modules.
    for result in first:
        for worker in result["workers"].values():
            assert len(worker["compiled_at_boot"]) < 25, worker["compiled_at_boot"]
    messages = [n["message"] for n in notifications(stack)]
    built = [m for m in messages if ": built image " in m]
    assert len(built) == 1, messages[:40]
    image = built[0].split(": built image ", 1)[1].split()[0]
    repo_uri, tag = image.rsplit(":", 1)
    # The second cluster started from the same image: no second build, and it says so.
    assert any("reused image " + image in m for m in messages), messages[:40]
    # In the account's ECR repository (named after the slug) and in the registry behind it.
    ecr = aws("ecr")
    details = ecr.describe_images(repositoryName=stack.account)["imageDetails"]
    assert any(tag in d.get("imageTags", []) for d in details)
    auth = ecr.get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(auth["authorizationToken"]).decode().partition(":")
    path = repo_uri.split("/", 1)[1]
    tags = httpx.get(f"{auth['proxyEndpoint']}/v2/{path}/tags/list", auth=(user, password),
                     timeout=10).json()["tags"]
    assert tag in tags
    # Progress lines were notifications too.
    assert any("Environment image " + tag[:12] + ": push" in m for m in messages)
    # A changed environment (the package one version newer) is a new lock: a new image.
    pip_target(client_env / "changed", f"{EXTRA[0]}=={CHANGED}")
    (changed,) = run_client(stack, client_env, clusters=1, extra="changed")
    assert [v["appdirs"] for v in changed["workers"].values()] == [CHANGED]
    rebuilt = [m for m in (n["message"] for n in notifications(stack))
               if ": built image " in m and image not in m]
    assert len(rebuilt) == 1, rebuilt
    assert rebuilt[0].split(": built image ", 1)[1].split()[0].startswith(repo_uri + ":")


def test_docker_hub_environment_under_iam_and_the_token_stays_secret(stack, client_env):
    """A team account in its own (simulated) AWS account, IAM enforced, with only the setup
    and ongoing policies, storing environments on the Docker Hub stand-in: the image is
    pushed there by the builder, the worker pulls it with the token and runs it, and the
    token appears in no API response, log or notification."""
    from overcast.backends.aws import policies

    hub = json.loads((stack.home / "run" / "localcloud-dockerhub.json").read_text())
    headers = {"Authorization": f"Bearer {stack.token}"}
    team = httpx.post(f"{stack.url}/api/v1/teams", headers=headers, timeout=10,
                      json={"name": "hub-envs"}).json()["slug"]
    docs = {n: policies.load(n) for n in policies.NAMES}
    acct = httpx.post(f"{stack.endpoint}/_overcast/accounts", timeout=30, json={
        "setup_policy": docs["setup"], "ongoing_policy": docs["ongoing"]}).json()
    url = f"{stack.url}/api/v1/accounts/{team}/backend"
    put = httpx.put(url, headers=headers, timeout=60, json={
        "backend": "aws", "aws_region": "us-east-1", "aws_access_key_id": acct["access_key_id"],
        "aws_secret_access_key": acct["secret_access_key"], "registry_type": "docker_hub",
        "registry_username": hub["username"], "registry_access_token": hub["token"],
        "registry_repository": "overcast/envs"})
    assert put.status_code in (200, 202), put.text
    deadline = time.monotonic() + 900  # setup builds the VM image in that account
    while (state := httpx.get(url, headers=headers, timeout=10).json())["state"] != "ready":
        assert state["state"] in ("pending", "provisioning"), state["reason"]
        assert time.monotonic() < deadline, "backend setup did not finish"
        time.sleep(2)
    (result,) = run_client(stack, client_env, clusters=1, account=team)
    assert [v["appdirs"] for v in result["workers"].values()] == [EXTRA[1]]
    messages = [n["message"] for n in notifications(stack, team)]
    built = [m for m in messages if ": built image " in m]
    assert len(built) == 1, messages[:40]
    image = built[0].split(": built image ", 1)[1].split()[0]
    host = hub["url"].split("://", 1)[1]
    assert image.startswith(f"{host}/overcast/envs:")
    tags = httpx.get(f"{hub['url']}/v2/overcast/envs/tags/list",
                     auth=(hub["username"], hub["token"]), timeout=10).json()["tags"]
    assert image.rsplit(":", 1)[1] in tags
    texts = [put.text, json.dumps(messages)]
    for path in ("/backend", "/clusters?state=all", "/software-environments",
                 "/notifications?limit=500"):
        texts.append(httpx.get(f"{stack.url}/api/v1/accounts/{team}{path}", headers=headers,
                               timeout=10).text)
    texts += [p.read_text(errors="replace") for p in stack.home.rglob("*.log")]
    assert not any(hub["token"] in t for t in texts)
