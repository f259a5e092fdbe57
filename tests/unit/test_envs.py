"""Software environments: specs, locks and their hashes, package sync, the API and the CLI."""

from __future__ import annotations

import json

import dask.config
import pytest
from click.testing import CliRunner

from overcast.cli.main import cli
from overcast.client import packagesync
from overcast.envs import lock, spec

pytestmark = pytest.mark.timeout(60)

SYNC = {"python": "3.11", "packages": [{"name": "Six", "version": "1.16.0"},
                                       {"name": "distributed", "version": "2026.8.0"}]}


# -- specs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, words", [
    ({"kind": "conda"}, "kind"),
    ({"kind": "pip", "packages": []}, "1 to"),
    ({"kind": "pip", "packages": ["-e ./src"]}, "not allowed"),
    ({"kind": "pip", "packages": ["--index-url=http://x"]}, "not allowed"),
    ({"kind": "pip", "packages": ["pandas ==="]}, None),
    ({"kind": "requirements", "requirements": 3}, "text of a requirements file"),
    ({"kind": "requirements", "requirements": "six\n-r other.txt\n"}, "not allowed"),
    ({"kind": "container", "image": "UPPER/Case"}, "image reference"),
    ({"kind": "package_sync", "python": "3", "packages": []}, "major.minor"),
    ({"kind": "package_sync", "python": "3.11", "packages": [{"name": "x"}]}, "exact"),
])
def test_bad_specs_are_refused_with_what_to_change(bad, words):
    if words is None:
        spec.normalise(bad)  # a loose line is uv's to judge
        return
    with pytest.raises(spec.SpecError, match=words):
        spec.normalise(bad)


def test_names():
    assert spec.check_name("ml-2") == "ml-2"
    for bad in ("", "ML", "-x", "a" * 64, "a b"):
        with pytest.raises(spec.SpecError, match="lowercase"):
            spec.check_name(bad)


def test_package_sync_lock_is_canonical_and_hash_is_its_content_address():
    one = lock.package_sync_lock(spec.normalise({"kind": "package_sync", **SYNC}))
    assert one == "# python 3.11\ndistributed==2026.8.0\nsix==1.16.0\n"
    shuffled = dict(SYNC, packages=list(reversed(SYNC["packages"])) +
                    [{"name": "pip", "version": "25"}, {"name": "overcast", "version": "0"}])
    assert lock.package_sync_lock(spec.normalise({"kind": "package_sync", **shuffled})) == one
    assert lock.lock_hash(one) == lock.lock_hash(one) and len(lock.lock_hash(one)) == 64
    changed = dict(SYNC, packages=[{"name": "six", "version": "1.17.0"}])
    assert lock.lock_hash(lock.package_sync_lock(
        spec.normalise({"kind": "package_sync", **changed}))) != lock.lock_hash(one)
    other_python = dict(SYNC, python="3.12")
    assert lock.package_sync_lock(spec.normalise(
        {"kind": "package_sync", **other_python})) != one


def test_parse_compiled_and_distributed_is_added():
    out = "six==1.16.0 ; python_version >= '3'\n    # via x\nDask[complete]==2026.8.0\n"
    assert lock.parse_compiled(out) == {"six": "1.16.0", "dask": "2026.8.0"}
    lines = lock.requirement_lines({"kind": "pip", "packages": ["six"]})
    assert lines[0] == "six" and lines[1].startswith("distributed==")
    assert lock.requirement_lines({"kind": "pip", "packages": ["dask[distributed]"]}) == \
        ["dask[distributed]"]


def test_package_sync_collects_exact_versions_and_marks_local_installs():
    body = packagesync.collect()
    names = {p["name"]: p["version"] for p in body["packages"]}
    from importlib.metadata import version

    assert names["distributed"] == version("distributed")
    assert "overcast" not in names and "pip" not in names
    assert body["python"].count(".") == 1


# -- API ---------------------------------------------------------------------------------------
@pytest.fixture
def api(api):
    api.base = f"/api/v1/accounts/{api.slug}/software-environments"
    return api


def sync_env(api, name, packages=SYNC):
    return api.post(api.base, headers=api.alice,
                    json={"name": name, "spec": {"kind": "package_sync", **packages}})


def test_create_versions_and_reuse(api):
    r = sync_env(api, "ml")
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["version"] == 1 and first["created"] and first["build_state"] == "pending"
    assert first["lock"].startswith("# python 3.11\n")
    again = sync_env(api, "ml").json()  # same spec: the same version, nothing new
    assert (again["version"], again["created"]) == (1, False)
    changed = sync_env(api, "ml", dict(SYNC, packages=[{"name": "six", "version": "1.17.0"}]))
    assert changed.json()["version"] == 2
    assert changed.json()["lock_hash"] != first["lock_hash"]
    listed = api.get(api.base, headers=api.alice).json()
    assert [(e["name"], e["version"]) for e in listed] == [("ml", 2)]
    v1 = api.get(api.base + "/ml", params={"version": 1}, headers=api.alice).json()
    assert v1["lock_hash"] == first["lock_hash"]


def test_same_lock_reuses_a_built_image(api):
    from sqlalchemy import select

    from overcast.store.models import SoftwareEnvironment

    first = sync_env(api, "a").json()
    with api.app.state.db.session() as session:
        row = session.scalar(select(SoftwareEnvironment).where(SoftwareEnvironment.name == "a"))
        row.build_state, row.image_uri = "ready", "registry.test/alice:" + first["lock_hash"]
        session.commit()
    second = sync_env(api, "b").json()
    assert second["build_state"] == "ready"
    assert second["image_uri"] == "registry.test/alice:" + first["lock_hash"]
    notes = api.get(f"/api/v1/accounts/{api.slug}/notifications", headers=api.alice).json()
    assert any("reused image registry.test/alice:" in n["message"] for n in notes)


@pytest.mark.parametrize("body, status, words", [
    ({"name": "Bad Name", "spec": {"kind": "pip", "packages": ["six"]}}, 400, "lowercase"),
    ({"name": "x", "spec": {"kind": "nope"}}, 400, "kind"),
    ({"name": "x"}, 422, "spec"),
    ({"name": "x", "spec": {"kind": "pip", "packages": ["-e ."]}}, 400, "not allowed"),
])
def test_bad_input_is_4xx_with_a_message(api, body, status, words):
    r = api.post(api.base, headers=api.alice, json=body)
    assert r.status_code == status and words in r.text
    assert api.get(api.base, headers=api.alice).json() == []  # nothing half-made


def test_local_only_packages_are_refused_by_name(api):
    body = dict(SYNC, local=[{"name": "mylib", "version": "0.1", "url": "file:///src/mylib"}])
    r = sync_env(api, "x", body)
    assert r.status_code == 400 and "mylib" in r.json()["detail"]
    r = api.post(f"/api/v1/accounts/{api.slug}/clusters", headers=api.alice,
                 json={"name": "c", "n_workers": 0, "package_sync": body})
    assert r.status_code == 400 and "mylib" in r.json()["detail"]


def test_cluster_records_its_environment(api):
    r = api.post(f"/api/v1/accounts/{api.slug}/clusters", headers=api.alice,
                 json={"name": "c", "n_workers": 0, "package_sync": SYNC})
    assert r.status_code == 201, r.text
    software = r.json()["options"]["software"]
    assert software["name"].startswith("sync-") and len(software["lock_hash"]) == 64
    r = api.post(f"/api/v1/accounts/{api.slug}/clusters", headers=api.alice,
                 json={"name": "d", "n_workers": 0, "software": "missing"})
    assert r.status_code == 404 and "overcast env ls" in r.json()["detail"]


def test_delete_and_other_accounts(api):
    sync_env(api, "ml")
    assert api.get(api.base, headers=api.bob).status_code == 404  # not even seen
    assert api.delete(api.base + "/ml", headers=api.bob).status_code == 404
    r = api.delete(api.base + "/ml", headers=api.alice)
    assert r.json() == {"name": "ml", "deleted_versions": 1}
    assert api.get(api.base + "/ml", headers=api.alice).status_code == 404
    assert api.delete(api.base + "/ml", headers=api.alice).status_code == 404


# -- CLI ---------------------------------------------------------------------------------------
@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path / "home"))
    return CliRunner()


def test_env_commands_have_help(runner):
    for args in (["env"], ["env", "create"], ["env", "ls"], ["env", "show"],
                 ["env", "delete"]):
        result = runner.invoke(cli, [*args, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output


def test_env_create_needs_exactly_one_source(runner, tmp_path):
    assert runner.invoke(cli, ["env", "create", "x"]).exit_code == 2
    req = tmp_path / "r.txt"
    req.write_text("six\n")
    result = runner.invoke(cli, ["env", "create", "x", "-r", str(req), "--pip", "six"])
    assert result.exit_code == 2 and "exactly one" in result.output


def test_env_not_configured_exits_3(runner):
    with dask.config.set({"overcast.server": None, "overcast.token": None}):
        for args in (["env", "ls"], ["env", "show", "x"], ["env", "delete", "x"],
                     ["env", "create", "x", "--pip", "six"]):
            result = runner.invoke(cli, args)
            assert result.exit_code == 3, (args, result.output)


# -- version skew ------------------------------------------------------------------------------
def versions(**pkgs):
    return {"packages": {"python": "3.11.7", "dask": "2026.8.0", "distributed": "2026.8.0",
                         "cloudpickle": "3.1.3", **pkgs}}


def test_skew_none_when_equal_table_when_different_refused_on_major():
    from overcast.client import skew

    same = {"scheduler": versions(), "workers": {"w1": versions()}}
    assert skew.check(versions(), same) is None
    minor = {"scheduler": versions(cloudpickle="3.1.2"), "workers": {"w1": versions()}}
    table = skew.check(versions(), minor)
    assert "cloudpickle" in table and "3.1.2" in table and "dask " not in table
    major = {"scheduler": versions(distributed="2025.1.0"), "workers": {}}
    with pytest.raises(skew.VersionSkewError, match="major version of distributed"):
        skew.check(versions(), major)


# -- the build plan ----------------------------------------------------------------------------
def test_build_script_pushes_the_lock_hash_tag_and_keeps_tokens_off_argv():
    import yaml

    from overcast.envs import build

    text = "# python 3.11\nsix==1.16.0\n"
    plan = build.BuildPlan(lock.lock_hash(text), text, "127.0.0.1:5000/1/alice", "ecr",
                           "127.0.0.1:5000", region="us-east-1")
    script = build.build_script(plan)
    assert plan.image_uri.endswith(":" + lock.lock_hash(text))
    assert "six==1.16.0" in script and f"step push docker push {plan.image_uri}" in script
    assert "registry_login us-east-1 | docker login --username AWS --password-stdin" in script
    assert f"say done {plan.image_uri}" in script
    # The base image leaves out this builder's user data, logins and token.
    for path in ("./var/lib/cloud", "./root/.docker", "./etc/overcast/registry-token"):
        assert f"--exclude={path}" in script
    hub = build.BuildPlan(plan.lock_hash, text, "docker.io/team/envs", "docker_hub",
                          "docker.io", username="team")
    assert "--password-stdin docker.io < /etc/overcast/registry-token" in build.build_script(hub)
    doc = yaml.safe_load(build.builder_user_data(hub, "dckr_pat_secret")[len("#cloud-config"):])
    files = {f["path"]: f for f in doc["write_files"]}
    assert files[build.TOKEN_FILE]["permissions"] == "0600"
    assert "dckr_pat_secret" not in files[build.SCRIPT]["content"]
    assert doc["runcmd"] == [["/bin/sh", build.SCRIPT]]


def test_build_progress_from_the_console():
    from overcast.envs import build

    console = ("[local-cloud-init] running\noverkill\noverhead overcast-env-build: login\n"
               "overcast-env-build: wheels\nnoise\novercast-env-build: push\n")
    state = build.progress(console)
    assert state.steps == ["login", "wheels", "push"] and not state.done and not state.failed
    state = build.progress(console + "overcast-env-build: done reg/x:abc\n")
    assert state.done == "reg/x:abc"
    state = build.progress(console + "overcast-env-build: FAILED at step push (exit 1)\n")
    assert state.failed == "FAILED at step push (exit 1)" and state.done is None


def test_instance_engine_refuses_what_a_vm_engine_would_not_reach():
    from overcast.localcloud import engineproxy as ep

    assert ep.refusal({"HostConfig": {"NetworkMode": "host"}}) is None
    assert ep.refusal({"HostConfig": {"Mounts": [{"Type": "tmpfs", "Target": "/x"}]}}) is None
    for host in ({"Binds": ["/:/host"]}, {"Mounts": [{"Type": "bind", "Source": "/"}]},
                 {"Mounts": [{"Type": "volume", "Source": "v"}]}, {"VolumesFrom": ["c"]},
                 {"Privileged": True}, {"CapAdd": ["SYS_ADMIN"]}, {"PidMode": "host"},
                 {"Devices": [{"PathOnHost": "/dev/sda"}]}, {"SecurityOpt": ["x"]},
                 {"DeviceRequests": [{"Count": -1}]}):
        assert "does not allow" in ep.refusal({"HostConfig": host}), host
    assert ep.images_named("POST", "/v1.41/build", "t=reg%2Fa%3Ab&q=1") == ["reg/a:b"]
    assert ep.images_named("POST", "/v1.41/images/create", "fromImage=reg/a&tag=t") == [
        "reg/a:t"]
    assert ep.images_named("POST", "/v1.41/images/create", "fromSrc=-&repo=base&tag=1") == [
        "base:1"]
    assert ep.images_named("GET", "/v1.41/images/json", "") == []


# -- registries --------------------------------------------------------------------------------
def test_image_exists_by_lock_hash_tag(ctx):
    from overcast.backends.aws import registry

    assert registry.image_exists(ctx, "alice", "a" * 64) is False  # no repository yet
    registry.ensure_ecr_repository(ctx, "alice")
    manifest = json.dumps({"schemaVersion": 2, "mediaType":
                           "application/vnd.docker.distribution.manifest.v2+json",
                           "config": {}, "layers": []})
    ctx.client("ecr").put_image(repositoryName="alice", imageManifest=manifest,
                                imageTag="a" * 64)
    assert registry.image_exists(ctx, "alice", "a" * 64) is True
    assert registry.image_exists(ctx, "alice", "b" * 64) is False


def hub_transport(good: tuple[str, str]):
    """Docker Hub's Bearer flow: /v2/ challenges, the token service checks the login."""
    import base64

    import httpx

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/":
            return httpx.Response(401, headers={"WWW-Authenticate": (
                'Bearer realm="https://auth.test/token",service="registry.test"')})
        if request.url.host == "auth.test":
            sent = request.headers.get("Authorization", "")
            ok = sent == "Basic " + base64.b64encode(":".join(good).encode()).decode()
            assert request.url.params["scope"] == "repository:team/envs:push,pull"
            return httpx.Response(200, json={"token": "t"}) if ok else httpx.Response(401)
        return httpx.Response(404)

    return httpx.MockTransport(handler)


def test_docker_hub_bearer_login():
    from overcast.backends import dockerhub

    transport = hub_transport(("team", "dckr_pat_good"))
    dockerhub.check_login("team", "dckr_pat_good", "team/envs", "https://hub.test",
                          transport=transport)
    with pytest.raises(dockerhub.RegistryLoginError) as err:
        dockerhub.check_login("team", "dckr_pat_bad", "team/envs", "https://hub.test",
                              transport=transport)
    assert "hub.test" in str(err.value) and "dckr_pat_bad" not in str(err.value)
    with pytest.raises(dockerhub.RegistryLoginError, match="namespace/name"):
        dockerhub.check_repository("NoSlash")


def test_local_installs_are_recognised(tmp_path):
    from importlib import metadata

    def dist(name, direct_url=None):
        folder = tmp_path / f"{name}-1.0.dist-info"
        folder.mkdir()
        (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        if direct_url is not None:
            (folder / "direct_url.json").write_text(json.dumps(direct_url))
        return metadata.PathDistribution(folder)

    assert packagesync.name_version(dist("plain")) == ("plain", "1.0")
    assert packagesync.local_origin(dist("plain2")) is None
    editable = dist("mylib", {"url": "file:///src/mylib", "dir_info": {"editable": True}})
    assert packagesync.local_origin(editable) == "file:///src/mylib"
    wheel = dist("fromwheel", {"url": "file:///tmp/x.whl", "archive_info": {}})
    assert packagesync.local_origin(wheel) == "file:///tmp/x.whl"
    vcs = dist("fromgit", {"url": "https://example.com/x.git", "vcs_info": {"vcs": "git"}})
    assert packagesync.local_origin(vcs) is None  # a builder can fetch that
