"""An in-memory cloud implementing overcast.backends.base.Provider, with fault injection.

`FakeProvider.inject(verb, make_error, times=None, cluster=None)` makes the next `times` calls
of `verb` ("*" for every verb) raise `make_error()`, optionally only for one cluster's calls.
Instances are "running" as soon as they are launched; `live()` is what a user's cloud console
would list, for the no-orphan check.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from overcast import tags as T
from overcast.backends import base

ZONES = ["us-east-1a", "us-east-1b", "us-east-1c"]
LAUNCH_TOKEN = "fake:launch-token"

# One maker per error class; the fault matrix injects each at each step.
ERRORS: dict[str, Callable[[], BaseException]] = {
    "server": lambda: base.ServerError("AWS had an internal error (InternalError)",
                                       code="InternalError"),
    "throttled": lambda: base.Throttled("AWS is throttling requests (RequestLimitExceeded)",
                                        code="RequestLimitExceeded"),
    "quota": lambda: base.QuotaExceeded(
        "An AWS quota is reached (VcpuLimitExceeded)",
        "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
        code="VcpuLimitExceeded"),
    "capacity": lambda: base.CapacityError("No capacity", None,
                                           code="InsufficientInstanceCapacity"),
    "permission": lambda: base.PermissionMissing("not allowed to call ec2:RunInstances",
                                                 ["ec2:RunInstances"],
                                                 code="UnauthorizedOperation"),
    "credentials": lambda: base.CredentialsInvalid("AWS rejected the credentials",
                                                   code="AuthFailure"),
    "fatal": lambda: base.ProviderError("AWS failed: SomethingNew", code="SomethingNew"),
    "unexpected": lambda: RuntimeError("a bug in overcast"),
}


@dataclass
class Fault:
    verb: str
    make: Callable[[], BaseException]
    times: int | None
    cluster: int | None = None


@dataclass
class FakeInstance:
    info: base.InstanceInfo
    spec: base.LaunchSpec | None = None


@dataclass
class FakeConn:
    region: str
    credentials: dict[str, str] = field(default_factory=dict)


class FakeProvider(base.Provider):
    name = "fake"
    spot_interruption_reason = "Server.SpotInstanceTermination"

    def __init__(self) -> None:
        self.instances: dict[str, FakeInstance] = {}
        self.firewalls: dict[int, str] = {}
        self.accounts: dict[str, base.AccountInfra] = {}
        self.faults: list[Fault] = []
        self.calls: list[str] = []
        self._ids = itertools.count(1)

    # --- faults ---------------------------------------------------------------------------
    def inject(self, verb: str, make: Callable[[], BaseException], times: int | None = None,
               cluster: int | None = None) -> Fault:
        fault = Fault(verb, make, times, cluster)
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        self.faults.clear()

    def _enter(self, verb: str, cluster: int | None = None) -> None:
        self.calls.append(verb)
        for fault in list(self.faults):
            if fault.verb not in (verb, "*"):
                continue
            if fault.cluster is not None and fault.cluster != cluster:
                continue
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
            raise fault.make()

    def live(self) -> set[str]:
        return {i for i, inst in self.instances.items()
                if inst.info.state not in ("terminated", "shutting-down")}

    # --- credentials and identity -----------------------------------------------------------
    def connect(self, region, credentials=None, on_call=None) -> FakeConn:
        self._enter("connect")
        return FakeConn(region, dict(credentials or {}))

    def account_id(self, conn) -> str:
        return "123456789012"

    def check_credentials(self, conn) -> dict[str, str]:
        self._enter("check_credentials")
        return {"account": "123456789012", "arn": "arn:aws:iam::123456789012:user/fake"}

    def missing_permissions(self, conn) -> list[str]:
        self._enter("missing_permissions")
        return []

    def policy_documents(self, deployment_id=None, role=None) -> dict[str, dict]:
        return {"setup": {"Statement": []}, "ongoing": {"Statement": []}}

    def is_temporary_key(self, key_id: str) -> bool:
        return key_id.startswith("ASIA")

    def mask_key_id(self, key_id: str) -> str:
        return "*" * 8 + key_id[-4:]

    def role_setup(self, slug, trusted_account, external_id) -> base.RoleSetup:
        return base.RoleSetup(role_name=f"overcast-{slug}", trust_policy={})

    def create_access_role(self, conn, slug, trusted_account, external_id) -> str:
        self._enter("create_access_role")
        return f"arn:aws:iam::123456789012:role/overcast-{slug}"

    # --- an account's standing resources ------------------------------------------------------
    def zones(self, conn) -> list[str]:
        self._enter("zones")
        return list(ZONES)

    def set_up_account(self, conn, slug, *, network_owner, registry, s3_read=(),
                       report=base.noop):
        self._enter("set_up_account")
        infra = self.accounts.get(network_owner)
        if infra is None:
            net = base.Network(network_id=f"vpc-{network_owner}",
                               public_subnets={ZONES[0]: "subnet-pub-a"},
                               private_subnets={ZONES[0]: "subnet-priv-a"})
            infra = base.AccountInfra(net, slug, slug)
            self.accounts[network_owner] = infra
            report(base.Resource("vpc", net.network_id, None, "created"))
        return base.AccountInfra(infra.network, slug, slug)

    def find_account(self, conn, slug):
        self._enter("find_account")
        return self.accounts.get(slug)

    def ensure_zone(self, conn, network, owner, zone, report=base.noop):
        self._enter("ensure_zone")
        network.public_subnets.setdefault(zone, f"subnet-pub-{zone[-1]}")
        network.private_subnets.setdefault(zone, f"subnet-priv-{zone[-1]}")
        return network

    def tear_down_account(self, conn, slug, *, network_owner, report=base.noop) -> None:
        self._enter("tear_down_account")
        self.terminate(conn, [i.info.aws_id for i in self.instances.values()
                              if i.info.tags.get(T.ACCOUNT) == slug])
        self.accounts.pop(network_owner or slug, None)

    # --- clusters -----------------------------------------------------------------------------
    def open_firewall(self, conn, network, account, cluster_id, cluster_name, ports, cidr):
        self._enter("open_firewall", cluster_id)
        return self.firewalls.setdefault(cluster_id, f"sg-{cluster_id}")

    def close_firewall(self, conn, cluster_id) -> list[str]:
        self._enter("close_firewall", cluster_id)
        self.firewalls.pop(cluster_id, None)
        return []

    def instance_types(self, conn, names):
        self._enter("instance_types")
        return {n: base.TypeInfo(n, 4, 16384, 0) for n in names}

    def launch(self, conn, specs: Sequence[base.LaunchSpec]) -> list[base.InstanceInfo]:
        out = []
        for spec in specs:
            self._enter("launch", int(spec.tags.get(T.CLUSTER, "0")))
            found = [i for i in self.instances.values()
                     if i.info.tags.get(LAUNCH_TOKEN) == spec.client_token]
            if found:
                out.append(found[0].info)
                continue
            aws_id = f"i-{next(self._ids):08x}"
            zone = next(z for z in ZONES if spec.subnet_id.endswith(z[-1]))
            info = base.InstanceInfo(
                aws_id=aws_id, state="running", zone=zone, subnet_id=spec.subnet_id,
                role=spec.role, spot=spec.spot, private_ip="10.0.0.1", public_ip=None,
                tags={**spec.tags, T.ROLE: spec.role, LAUNCH_TOKEN: spec.client_token})
            self.instances[aws_id] = FakeInstance(info, spec)
            out.append(info)
        return out

    def list_instances(self, conn, *, cluster_id=None, account=None,
                       include_terminated=False) -> list[base.InstanceInfo]:
        self._enter("list_instances", cluster_id)
        out = []
        for inst in self.instances.values():
            info = inst.info
            if cluster_id is not None and info.tags.get(T.CLUSTER) != str(cluster_id):
                continue
            if account is not None and info.tags.get(T.ACCOUNT) != account:
                continue
            if not include_terminated and info.state == "terminated":
                continue
            out.append(info)
        return out

    def terminate(self, conn, ids: list[str]) -> list[str]:
        clusters = {self.instances[i].info.tags.get(T.CLUSTER) for i in ids
                    if i in self.instances}
        only = clusters.pop() if len(clusters) == 1 else None
        self._enter("terminate", int(only) if only else None)
        for aws_id in ids:
            if aws_id in self.instances:
                self.instances[aws_id].info.state = "terminated"
        return list(ids)

    def read_logs(self, conn, group, streams, start_ms=None) -> dict[str, list[dict[str, Any]]]:
        self._enter("read_logs")
        return {s: [] for s in streams}
