"""Client settings: dask config namespace `overcast`, precedence, the file `overcast up` writes."""

from __future__ import annotations

import os
import stat

import dask.config
import yaml

import overcast  # noqa: F401  (registers the defaults)
from overcast.client import config
from overcast.client.api import Api
from overcast.client.cluster import workers_to_wait_for


def test_defaults_registered():
    assert dask.config.get("overcast.start-timeout") == "5 minutes"
    assert dask.config.get("overcast.backend-options") == {}
    assert dask.config.get("overcast.n-workers") == 4


def test_explicit_argument_beats_config():
    with dask.config.set({"overcast.server": "http://from-config", "overcast.token": "t"}):
        assert Api().server == "http://from-config"
        assert Api("http://explicit/").server == "http://explicit"
        assert config.get("account", "explicit-acc") == "explicit-acc"
        assert config.seconds("start-timeout") == 300


def test_env_beats_file(tmp_path, monkeypatch):
    (tmp_path / "overcast.yaml").write_text(yaml.safe_dump(
        {"overcast": {"server": "http://file", "account": "file-acc"}}))
    monkeypatch.setenv("DASK_OVERCAST__ACCOUNT", "env-acc")
    collected = dask.config.collect(paths=[str(tmp_path)])
    assert collected["overcast"]["server"] == "http://file"
    assert collected["overcast"]["account"] == "env-acc"


def test_write_user_config_merges_and_is_private(tmp_path, monkeypatch):
    monkeypatch.setattr(dask.config, "PATH", str(tmp_path))
    path = tmp_path / "overcast.yaml"
    path.write_text(yaml.safe_dump({"overcast": {"backend-options": {"spot": True}},
                                    "distributed": {"x": 1}}))
    try:
        written = config.write_user_config({"server": "http://127.0.0.1:8600", "token": "t0k",
                                            "account": "me"})
        assert written == str(path)
        data = yaml.safe_load(path.read_text())
        assert data["distributed"] == {"x": 1}
        assert data["overcast"] == {"backend-options": {"spot": True},
                                    "server": "http://127.0.0.1:8600", "token": "t0k",
                                    "account": "me"}
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        monkeypatch.undo()
        dask.config.refresh()


def test_wait_for_workers_semantics():
    assert workers_to_wait_for(True, 4) == 4
    assert workers_to_wait_for(False, 4) == 0
    assert workers_to_wait_for(None, 4) == 0
    assert workers_to_wait_for(2, 4) == 2
    assert workers_to_wait_for(10, 4) == 4
    assert workers_to_wait_for(0.5, 4) == 2
