"""Cluster options: the documented backend options, their defaults and their checks.

Checked before any AWS call, on the server (4xx) and in the client (early error). Precedence:
keyword > dask config (the client merges those) > account backend settings > built-in default.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from dask.utils import parse_timedelta

SUPPORTED_REGIONS = [
    "us-east-1", "us-east-2", "us-west-1", "us-west-2", "ap-southeast-1", "ca-central-1",
    "ap-northeast-1", "ap-northeast-2", "ap-south-1", "ap-southeast-2", "eu-central-1",
    "eu-north-1", "eu-west-1", "eu-west-2", "eu-west-3", "sa-east-1",
]
DEFAULT_REGION = "us-east-1"
DEFAULT_FIREWALL = {"ports": [22, 8787, 8786], "cidr": "0.0.0.0/0"}
DEFAULT_SCHEDULER_VM_TYPES = ["m6i.large"]
DEFAULT_WORKER_VM_TYPES = ["m6i.xlarge"]
DEFAULT_GPU_WORKER_VM_TYPES = ["g4dn.xlarge"]
DEFAULT_IDLE_TIMEOUT = "20 minutes"
DEFAULT_NO_CLIENT_TIMEOUT = "10 minutes"
# The VM-side watchdog: a VM powers itself off after this long without the control plane.
DEFAULT_SHUTDOWN_AFTER_UNREACHABLE = "20 minutes"
BACKEND_OPTION_KEYS = {
    "region", "zone", "spot", "spot_on_demand_fallback", "firewall",
    "scheduler_vm_types", "worker_vm_types", "shutdown_after_unreachable",
}
_ZONE = re.compile(r"^[a-z]{2}-[a-z]+-\d[a-z]$")
# GPUs per instance type, known without asking AWS, so a request for more than one GPU per
# worker is refused before anything starts. Types not listed are checked against EC2's own
# description by the reconciler (overcast.reconciler.vmtypes) before any instance is launched.
GPU_COUNTS: dict[str, int] = {
    **{f"g4dn.{s}": 1 for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")},
    "g4dn.12xlarge": 4, "g4dn.metal": 8,
    **{f"g5.{s}": 1 for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")},
    "g5.12xlarge": 4, "g5.24xlarge": 4, "g5.48xlarge": 8,
    **{f"g6.{s}": 1 for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")},
    "g6.12xlarge": 4, "g6.24xlarge": 4, "g6.48xlarge": 8,
    "g4ad.xlarge": 1, "g4ad.2xlarge": 1, "g4ad.4xlarge": 1, "g4ad.8xlarge": 2,
    "g4ad.16xlarge": 4, "g3s.xlarge": 1, "g3.4xlarge": 1, "g3.8xlarge": 2, "g3.16xlarge": 4,
    "p2.xlarge": 1, "p2.8xlarge": 8, "p2.16xlarge": 16, "p3.2xlarge": 1, "p3.8xlarge": 4,
    "p3.16xlarge": 8, "p3dn.24xlarge": 8, "p4d.24xlarge": 8, "p4de.24xlarge": 8,
    "p5.48xlarge": 8,
}
_VM_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")


class OptionError(ValueError):
    """Bad cluster option; the message says what to change."""


@dataclass
class ClusterOptions:
    region: str = DEFAULT_REGION
    zone: str | None = None
    zone_pinned: bool = False  # the user (or account) chose the zone: no failover
    spot: bool = False
    spot_on_demand_fallback: bool = False
    firewall: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_FIREWALL))
    scheduler_vm_types: list[str] = field(default_factory=lambda: list(DEFAULT_SCHEDULER_VM_TYPES))
    worker_vm_types: list[str] = field(default_factory=lambda: list(DEFAULT_WORKER_VM_TYPES))
    worker_gpu: int = 0
    idle_timeout: float = parse_timedelta(DEFAULT_IDLE_TIMEOUT)
    no_client_timeout: float = parse_timedelta(DEFAULT_NO_CLIENT_TIMEOUT)
    shutdown_after_unreachable: float = parse_timedelta(DEFAULT_SHUTDOWN_AFTER_UNREACHABLE)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterOptions:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def check_region(region: Any) -> str:
    if region not in SUPPORTED_REGIONS:
        raise OptionError(
            f"Region {region!r} is not supported. Use one of: {', '.join(SUPPORTED_REGIONS)}."
        )
    return region


def check_zone(zone: Any, region: str) -> str:
    if not isinstance(zone, str) or not _ZONE.match(zone) or not zone.startswith(region):
        raise OptionError(
            f"Zone {zone!r} is not a zone of region {region!r}: use e.g. '{region}a', "
            f"or set 'region' to the zone's region."
        )
    return zone


def check_firewall(firewall: Any) -> dict[str, Any]:
    if not isinstance(firewall, dict) or set(firewall) - {"ports", "cidr"}:
        raise OptionError('firewall must look like {"ports": [8786, 8787], "cidr": "10.0.0.0/16"}.')
    ports = firewall.get("ports", DEFAULT_FIREWALL["ports"])
    cidr = firewall.get("cidr", DEFAULT_FIREWALL["cidr"])
    if not isinstance(ports, list) or not ports:
        raise OptionError("firewall ports must be a non-empty list of port numbers 1-65535.")
    for port in ports:
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise OptionError(f"firewall port {port!r} is not a port number: use 1-65535.")
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except (TypeError, ValueError):
        raise OptionError(
            f"firewall cidr {cidr!r} is not a valid CIDR block: use e.g. '10.2.0.0/16' "
            f"or '0.0.0.0/0'."
        ) from None
    if network.version != 4:
        raise OptionError(f"firewall cidr {cidr!r} must be an IPv4 block, e.g. '10.2.0.0/16'.")
    return {"ports": sorted(set(ports)), "cidr": str(network)}


def check_bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise OptionError(f"{what}={value!r} must be true or false.")
    return value


def check_vm_types(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(
        isinstance(v, str) and _VM_TYPE.match(v) for v in value
    ):
        raise OptionError(f"{what} must be a list of EC2 instance types, e.g. ['m6i.xlarge'].")
    return value


def one_gpu_message(what: str) -> str:
    return (f"{what}: workers get one GPU each. Use worker_gpu=1 (or a one-GPU type such as "
            f"{DEFAULT_GPU_WORKER_VM_TYPES[0]}) and more workers instead of more GPUs per worker.")


def check_worker_type_gpus(types: list[str]) -> int:
    """1 if the (known) worker types have a GPU, else 0; more than one GPU is refused."""
    many = [t for t in types if GPU_COUNTS.get(t, 0) > 1]
    if many:
        raise OptionError(one_gpu_message(
            ", ".join(f"{t} has {GPU_COUNTS[t]} GPUs" for t in many)))
    return 1 if any(GPU_COUNTS.get(t, 0) == 1 for t in types) else 0


def check_gpu(worker_gpu: Any) -> int:
    if worker_gpu in (None, False, 0):
        return 0
    if worker_gpu is True or worker_gpu == 1:
        return 1
    raise OptionError(one_gpu_message(f"worker_gpu={worker_gpu!r}"))


def resolve(
    backend_options: dict[str, Any] | None,
    *,
    account_defaults: dict[str, Any] | None = None,
    worker_gpu: Any = None,
    scheduler_vm_types: Any = None,
    worker_vm_types: Any = None,
    idle_timeout: Any = None,
    no_client_timeout: Any = None,
) -> ClusterOptions:
    """Merge the request's options over the account's and the built-in defaults, checking each."""
    given = dict(backend_options or {})
    unknown = set(given) - BACKEND_OPTION_KEYS
    if unknown:
        raise OptionError(
            f"Unknown backend option(s): {', '.join(sorted(unknown))}. "
            f"Known options: {', '.join(sorted(BACKEND_OPTION_KEYS))}."
        )
    account = {k: v for k, v in (account_defaults or {}).items() if v is not None}
    opts = ClusterOptions()
    opts.region = check_region(given.get("region", account.get("region", DEFAULT_REGION)))
    zone = given.get("zone")
    if zone is None and account.get("zone") and account.get("region", opts.region) == opts.region:
        zone = account["zone"]
    if zone is not None:
        opts.zone, opts.zone_pinned = check_zone(zone, opts.region), True
    opts.spot = check_bool(given.get("spot", False), "spot")
    opts.spot_on_demand_fallback = check_bool(given.get("spot_on_demand_fallback", False),
                                              "spot_on_demand_fallback")
    opts.firewall = check_firewall(given.get("firewall", account.get("firewall"))
                                   or DEFAULT_FIREWALL)
    opts.worker_gpu = check_gpu(worker_gpu)
    if opts.worker_gpu:
        opts.worker_vm_types = list(DEFAULT_GPU_WORKER_VM_TYPES)
    sched = scheduler_vm_types or given.get("scheduler_vm_types")
    work = worker_vm_types or given.get("worker_vm_types")
    if sched is not None:
        opts.scheduler_vm_types = check_vm_types(sched, "scheduler_vm_types")
    if work is not None:
        opts.worker_vm_types = check_vm_types(work, "worker_vm_types")
    # A GPU worker type means one GPU per worker, as if worker_gpu=1 were given.
    opts.worker_gpu = max(opts.worker_gpu, check_worker_type_gpus(opts.worker_vm_types))
    if given.get("shutdown_after_unreachable") is not None:
        opts.shutdown_after_unreachable = _seconds(given["shutdown_after_unreachable"],
                                                   "shutdown_after_unreachable")
    if idle_timeout is not None:
        opts.idle_timeout = _seconds(idle_timeout, "idle_timeout")
    if no_client_timeout is not None:
        opts.no_client_timeout = _seconds(no_client_timeout, "no_client_timeout")
    return opts


MAX_TIMEOUT = 366 * 24 * 3600.0  # a year: beyond it, say "no timeout" by stopping yourself


def check_duration(value: Any, what: str) -> float:
    """Seconds of a duration option ("20 minutes", 1200); OptionError says what to change."""
    return _seconds(value, what)


def _seconds(value: Any, what: str) -> float:
    bad = OptionError(f"{what}={value!r} is not a duration: use e.g. '20 minutes' or 1200 "
                      f"(seconds).")
    if isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
        raise bad
    try:
        seconds = float(parse_timedelta(value, default="s"))
    except (TypeError, ValueError, KeyError, IndexError, OverflowError, AttributeError):
        raise bad from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise OptionError(f"{what} must be a positive duration, e.g. '20 minutes'.")
    if seconds > MAX_TIMEOUT:
        raise OptionError(f"{what}={value!r} is longer than a year: use at most '365 days'.")
    return seconds
