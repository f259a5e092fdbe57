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
