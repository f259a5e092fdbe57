"""The AWS provider: `overcast.backends.base.Provider`'s verbs on this package's functions.

A thin adapter: every verb calls the existing idempotent functions (network, iam, logs,
registry, firewall, instances, teardown, checks, access_role, policies) over an `AwsContext`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .. import base
from . import (
    access_role,
    checks,
    firewall,
    iam,
    instances,
    logs,
    network,
    policies,
    registry,
    teardown,
)
from .errors import QuotaExceeded, quota_for_type
from .session import AwsContext, context, preload, record_actions

LOG_RETENTION_DAYS = 30
SPOT_INTERRUPTION = "Server.SpotInstanceTermination"


def _neutral(net: network.Network) -> base.Network:
    return base.Network(network_id=net.vpc_id, public_subnets=dict(net.public_subnets),
                        private_subnets=dict(net.private_subnets), native=net)


class AwsProvider(base.Provider):
    name = "aws"
    spot_interruption_reason = SPOT_INTERRUPTION

    def warm_up(self) -> None:
        preload()

    # --- credentials and identity -----------------------------------------------------------
    def connect(self, region: str, credentials: dict[str, str] | None = None,
                on_call: Callable[[str], None] | None = None) -> AwsContext:
        ctx = context(region, **(credentials or {}))
        if on_call is not None:
            record_actions(ctx, on_call)
        return ctx

    def account_id(self, conn: AwsContext) -> str:
        return conn.account_id()

    def check_credentials(self, conn: AwsContext) -> dict[str, str]:
        return checks.caller_identity(conn)

    def missing_permissions(self, conn: AwsContext) -> list[str]:
        return checks.missing_actions(conn, policies.all_actions())

    def policy_documents(self, deployment_id: str | None = None,
                         role: str | None = None) -> dict[str, dict]:
        return {name: policies.load(name, deployment_id, role) for name in policies.NAMES}

    def is_temporary_key(self, key_id: str) -> bool:
        return checks.is_temporary_key(key_id)

    def mask_key_id(self, key_id: str) -> str:
        return checks.mask_key_id(key_id)

    def role_setup(self, slug: str, trusted_account: str, external_id: str) -> base.RoleSetup:
        return base.RoleSetup(role_name=access_role.role_name(slug),
                              trust_policy=access_role.trust_policy(trusted_account,
                                                                    external_id))

    def create_access_role(self, conn: AwsContext, slug: str, trusted_account: str,
                           external_id: str, documents: dict[str, dict] | None = None) -> str:
        return access_role.ensure_access_role(conn, slug, trusted_account, external_id,
                                              documents or self.policy_documents())

    # --- an account's standing resources ------------------------------------------------------
    def zones(self, conn: AwsContext) -> list[str]:
        return network.zones(conn)

    def set_up_account(self, conn: AwsContext, slug: str, *, network_owner: str,
                       registry: str | None, s3_read: Sequence[str] = (),
                       report: base.Report = base.noop) -> base.AccountInfra:
        net = network.ensure_network(conn, network_owner, report=report)
        profile = iam.ensure_instance_role(conn, slug, report=report, s3_read=list(s3_read))
        logs.ensure_log_group(conn, slug, retention_days=LOG_RETENTION_DAYS, report=report)
        if registry == "ecr":
            _ecr(conn, slug, report)
        return base.AccountInfra(network=_neutral(net), instance_profile=profile,
                                 log_group=slug)

    def find_account(self, conn: AwsContext, slug: str) -> base.AccountInfra | None:
        net = network.find_network(conn, slug)
        if net is None:
            return None
        # Role, profile and log group are named after the slug (made by setup).
        return base.AccountInfra(network=_neutral(net), instance_profile=slug, log_group=slug)

    def ensure_zone(self, conn: AwsContext, net: base.Network, owner: str, zone: str,
                    report: base.Report = base.noop) -> base.Network:
        return _neutral(network.ensure_zone_subnets(conn, net.native, owner, zone, report))

    def tear_down_account(self, conn: AwsContext, slug: str, *, network_owner: str | None,
                          report: base.Report = base.noop) -> None:
        teardown.teardown_account(conn, slug, owner=network_owner, report=report)

    # --- clusters -----------------------------------------------------------------------------
    def open_firewall(self, conn: AwsContext, net: base.Network, account: str,
                      cluster_id: int, cluster_name: str, ports: list[int], cidr: str) -> str:
        return firewall.ensure_cluster_security_group(conn, net.network_id, account,
                                                      cluster_id, cluster_name, ports, cidr)

    def close_firewall(self, conn: AwsContext, cluster_id: int) -> list[str]:
        return firewall.delete_cluster_security_groups(conn, cluster_id)

    def instance_types(self, conn: AwsContext, names: list[str]) -> dict[str, base.TypeInfo]:
        return instances.instance_types(conn, names)

    def launch(self, conn: AwsContext, specs: Sequence[base.LaunchSpec]
               ) -> list[base.InstanceInfo]:
        # One RunInstances per spec (a batch of `count` alike instances): each has its own
        # ClientToken, subnet and market, and a capacity error names the batch that failed.
        out = []
        for spec in specs:
            try:
                out.extend(instances.launch(conn, spec))
            except QuotaExceeded as exc:
                quota = quota_for_type(exc.quota, spec.instance_type, spec.spot)
                raise QuotaExceeded(exc.message.replace(exc.quota, quota), quota,
                                    code=exc.code) from exc
        return out

    def list_instances(self, conn: AwsContext, *, cluster_id: int | None = None,
                       account: str | None = None,
                       include_terminated: bool = False) -> list[base.InstanceInfo]:
        if cluster_id is not None:
            return instances.list_cluster_instances(conn, cluster_id,
                                                    include_terminated=include_terminated)
        if account is None:
            raise ValueError("list_instances needs cluster_id or account")
        return instances.list_account_instances(conn, account)

    def terminate(self, conn: AwsContext, ids: list[str]) -> list[str]:
        return instances.terminate(conn, ids) if ids else []

    def read_logs(self, conn: AwsContext, group: str, streams: list[str],
                  start_ms: int | None = None) -> dict[str, list[dict[str, Any]]]:
        return logs.read_streams(conn, group, streams, start_ms)


def _ecr(conn: AwsContext, slug: str, report: base.Report) -> None:
    registry.ensure_ecr_repository(conn, slug, report=report)
