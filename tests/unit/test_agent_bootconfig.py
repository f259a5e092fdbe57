import json

import pytest

from overcast.bootconfig import BootConfig


def test_round_trip() -> None:
    boot = BootConfig(
        control_plane="http://127.0.0.1:8600",
        cluster_id=12,
        cluster_token="secret",
        role="worker",
        log_group="acme",
        region="us-east-1",
        worker_resources={"GPU": 1},
        nthreads=4,
        heartbeat_interval=0.5,
    )
    text = boot.to_user_data()
    assert json.loads(text)["overcast"] == 1
    assert BootConfig.from_user_data(text) == boot


def test_contract_example_parses_and_unknown_keys_are_ignored() -> None:
    text = json.dumps(
        {
            "overcast": 1,
            "control_plane": "http://127.0.0.1:8600",
            "cluster_id": 12,
            "cluster_token": "<secret>",
            "role": "scheduler",
            "log_group": "acme",
            "region": "us-east-1",
            "scheduler_port": 8786,
            "dashboard_port": 8787,
            "worker_resources": {"GPU": 1},
            "nthreads": None,
            "heartbeat_interval": 2.0,
            "from_the_future": True,
        }
    )
    boot = BootConfig.from_user_data(text)
    assert boot.role == "scheduler" and boot.nthreads is None and boot.scheduler_port == 8786


def test_not_an_overcast_document() -> None:
    with pytest.raises(ValueError):
        BootConfig.from_user_data('{"hello": 1}')
