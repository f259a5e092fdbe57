"""Backend options: defaults, precedence and the messages bad input gets."""

from __future__ import annotations

import pytest

from overcast import options
from overcast.options import OptionError, resolve


def test_defaults_match_the_documentation():
    opts = resolve(None)
    assert opts.region == "us-east-1" and opts.zone is None and opts.spot is False
    assert opts.firewall == {"ports": [22, 8786, 8787], "cidr": "0.0.0.0/0"}
    assert opts.idle_timeout == 20 * 60


def test_keyword_beats_account_defaults():
    account = {"region": "us-west-2", "zone": "us-west-2b",
               "firewall": {"ports": [8786], "cidr": "10.0.0.0/8"}}
    assert resolve(None, account_defaults=account).zone == "us-west-2b"
    opts = resolve({"region": "eu-west-1"}, account_defaults=account)
    assert opts.region == "eu-west-1" and opts.zone is None  # account zone is of another region
    assert opts.firewall == {"ports": [8786], "cidr": "10.0.0.0/8"}
    custom = resolve({"firewall": {"ports": [22], "cidr": "1.2.3.0/24"}}, account_defaults=account)
    assert custom.firewall == {"ports": [22], "cidr": "1.2.3.0/24"}


@pytest.mark.parametrize("given, fragment", [
    ({"region": "mars-1"}, "us-east-1, us-east-2"),
    ({"region": "us-east-1", "zone": "us-west-2a"}, "not a zone of region 'us-east-1'"),
    ({"firewall": {"ports": [70000], "cidr": "0.0.0.0/0"}}, "use 1-65535"),
    ({"firewall": {"ports": [22], "cidr": "10.0.0.300/8"}}, "not a valid CIDR"),
    ({"firewall": {"ports": [22], "cidr": "10.0.0.1/8"}}, "not a valid CIDR"),
    ({"colour": "blue"}, "Unknown backend option(s): colour"),
    ({"worker_vm_types": "not a type"}, "list of EC2 instance types"),
])
def test_bad_backend_options_say_what_to_change(given, fragment):
    with pytest.raises(OptionError) as err:
        resolve(given)
    assert fragment in str(err.value)


def test_workers_get_one_gpu():
    assert resolve(None, worker_gpu=1).worker_gpu == 1
    assert resolve(None, worker_gpu=1).worker_vm_types == options.DEFAULT_GPU_WORKER_VM_TYPES
    with pytest.raises(OptionError, match="workers get one GPU each"):
        resolve(None, worker_gpu=2)


def test_durations_are_parsed():
    assert resolve(None, idle_timeout="5 minutes").idle_timeout == 300
    with pytest.raises(OptionError, match="not a duration"):
        resolve(None, idle_timeout="soon")


@pytest.mark.parametrize("types, fragment", [
    (["g5.12xlarge"], "g5.12xlarge has 4 GPUs: workers get one GPU each"),
    (["m6i.xlarge", "p4d.24xlarge"], "p4d.24xlarge has 8 GPUs"),
])
def test_multi_gpu_worker_types_are_refused_statically(types, fragment):
    with pytest.raises(OptionError) as err:
        resolve(None, worker_vm_types=types)
    assert fragment in str(err.value)


def test_a_one_gpu_worker_type_means_one_gpu_per_worker():
    opts = resolve({"worker_vm_types": ["g5.xlarge"]})
    assert opts.worker_gpu == 1 and opts.worker_vm_types == ["g5.xlarge"]
    assert resolve(None, scheduler_vm_types=["g5.12xlarge"]).worker_gpu == 0  # scheduler: any


def test_keyword_types_beat_backend_option_types():
    opts = resolve({"worker_vm_types": ["m6i.2xlarge"]}, worker_vm_types=["m6i.4xlarge"])
    assert opts.worker_vm_types == ["m6i.4xlarge"]


@pytest.mark.parametrize("key", ["spot", "spot_on_demand_fallback"])
def test_spot_flags_must_be_booleans(key):
    assert getattr(resolve({key: True}), key) is True
    with pytest.raises(OptionError, match="must be true or false"):
        resolve({key: "yes"})


def test_account_zone_is_pinned_and_applies_only_in_its_region():
    account = {"region": "us-east-1", "zone": "us-east-1c"}
    opts = resolve(None, account_defaults=account)
    assert opts.zone == "us-east-1c" and opts.zone_pinned
    assert resolve({"zone": "us-east-1b"}, account_defaults=account).zone == "us-east-1b"
    unpinned = resolve({"region": "us-west-1"}, account_defaults=account)
    assert unpinned.zone is None and not unpinned.zone_pinned
    assert resolve(None).zone_pinned is False


def test_options_survive_the_database_round_trip():
    opts = resolve({"region": "us-west-2", "spot": True}, worker_gpu=1, idle_timeout="3s")
    again = options.ClusterOptions.from_dict({**opts.to_dict(), "a_key_from_a_newer_server": 1})
    assert again == opts
