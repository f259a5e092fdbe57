"""The agent wheel the control plane serves to VMs: agent only, pinned, installable, stable."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import zipfile

import pytest
from fastapi.testclient import TestClient

import overcast
from overcast.server import dist
from overcast.server.app import create_app
from overcast.store.db import Database

pytestmark = pytest.mark.timeout(120)


def test_wheel_holds_the_agent_and_nothing_of_the_control_plane() -> None:
    wheel = dist.build()
    names = zipfile.ZipFile(io.BytesIO(wheel.data)).namelist()
    assert "overcast/agent/main.py" in names and "overcast/bootconfig.py" in names
    assert not [n for n in names if n.startswith(("overcast/server", "overcast/reconciler",
                                                  "overcast/backends", "overcast/cli",
                                                  "overcast/localcloud", "overcast/client"))]
    meta = zipfile.ZipFile(io.BytesIO(wheel.data)).read(
        f"overcast_agent-{overcast.__version__}.dist-info/METADATA").decode()
    assert f"Version: {overcast.__version__}" in meta
    from importlib.metadata import version
    for name in ("distributed", "dask", "pyarrow", "pandas", "s3fs", "boto3", "bokeh"):
        assert f"{name}=={version(name)}" in meta or f"{name}[dataframe]=={version(name)}" \
            in meta, name
    assert "moto" not in wheel.constraints and "fastapi" not in wheel.constraints
    assert f"s3fs=={version('s3fs')}" in wheel.constraints.splitlines()
    assert dist.build().sha256 == wheel.sha256  # the same bytes on every start


def test_pip_installs_it_and_the_agent_imports(tmp_path) -> None:
    wheel = dist.build()
    path = tmp_path / wheel.filename
    path.write_bytes(wheel.data)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--disable-pip-version-check", "--no-index", "--target", str(target),
                    str(path)], check=True, timeout=90)
    assert (target / "bin" / "overcast-agent").exists()
    # -S, then site-packages appended without its .pth files: the dependencies are there, but
    # not the editable checkout of the whole overcast package.
    code = ("import importlib.util, sys; sys.path[:0] = [sys.argv[1]]; "
            "sys.path.append(sys.argv[2]); "
            "import overcast, overcast.agent.main, overcast.agent.dask_process; "
            "assert overcast.__file__.startswith(sys.argv[1]), overcast.__file__; "
            "assert importlib.util.find_spec('overcast.server') is None; "
            "print(overcast.__version__)")
    site = next(p for p in sys.path if p.endswith("site-packages"))
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(target), site],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == overcast.__version__


def test_served_without_auth_and_checked_by_sha256(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    client = TestClient(create_app(Database(f"sqlite:///{tmp_path / 'd.db'}"),
                                   run_reconciler=False))
    index = client.get("/api/v1/dist/index.json").json()
    v = overcast.__version__
    assert index["version"] == v and index["wheel"] == f"overcast-agent-{v}.whl"
    body = client.get(f"/api/v1/dist/overcast-agent-{v}.whl").content
    assert hashlib.sha256(body).hexdigest() == index["sha256"]
    assert client.get(f"/api/v1/dist/overcast-agent-{v}.whl.sha256").text.split()[0] == \
        index["sha256"]
    assert "distributed==" in client.get(f"/api/v1/dist/constraints-{v}.txt").text
    missing = client.get("/api/v1/dist/overcast-agent-9.9.9.whl")
    assert missing.status_code == 404 and v in missing.json()["detail"]


def test_builders_asking_at_once_share_one_build(monkeypatch) -> None:
    """Two image builders fetching the index at once: one build, both get its bytes (two
    threads in ast.parse crash CPython 3.11.7; that was a builder's 500)."""
    import threading
    import time

    builds = []

    def slow_build():
        builds.append(1)
        time.sleep(0.2)  # long enough for the other thread to arrive meanwhile
        return real_build()

    real_build = dist.build
    dist.agent_wheel()  # waits out a build another test's server started in the background
    monkeypatch.setattr(dist, "_built", None)
    monkeypatch.setattr(dist, "build", slow_build)
    got = []
    threads = [threading.Thread(target=lambda: got.append(dist.agent_wheel())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(builds) == 1 and len(got) == 4 and len({w.sha256 for w in got}) == 1
