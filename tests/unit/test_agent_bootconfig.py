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


def _boot() -> BootConfig:
    return BootConfig(control_plane="https://cp.example.com", cluster_id=3, cluster_token="tok",
                      role="worker", log_group="acme", region="us-east-1",
                      control_plane_ca="-----BEGIN CERTIFICATE-----\nAAA\n"
                                       "-----END CERTIFICATE-----\n",
                      shutdown_after_unreachable=60.0)


def test_cloud_init_document_carries_the_boot_file_and_starts_the_agent() -> None:
    import yaml

    boot = _boot()
    text = boot.to_cloud_init()
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    (entry,) = doc["write_files"]
    assert (entry["path"], entry["permissions"], entry["owner"]) == \
        ("/etc/overcast/boot.json", "0600", "root:root")
    assert json.loads(entry["content"])["control_plane_ca"] == boot.control_plane_ca
    assert doc["runcmd"] == [["/usr/local/sbin/overcast-agent-start"]]
    assert BootConfig.from_user_data(text) == boot  # the IMDS fallback parses it too


def test_the_agent_prefers_the_file_cloud_init_wrote(tmp_path, monkeypatch) -> None:
    from overcast import bootconfig

    path = tmp_path / "boot.json"
    monkeypatch.setenv("OVERCAST_BOOT_FILE", str(path))
    other = BootConfig(control_plane="http://x", cluster_id=9, cluster_token="t2", role="scheduler",
                       log_group="g", region="eu-west-1")
    assert bootconfig.load(other.to_cloud_init()) == other  # no file: the user data
    path.write_text(_boot().to_user_data())
    assert bootconfig.load(other.to_cloud_init()) == _boot()
    path.unlink()
    with pytest.raises(ValueError):
        bootconfig.load("#cloud-config\nruncmd: [[true]]\n")  # no file, no boot document


def test_token_is_not_in_the_repr() -> None:
    assert "tok" not in repr(_boot()).replace("token=<redacted>", "")
