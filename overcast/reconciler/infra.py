"""An account's standing resources in a region: network, instance role, log group.

Hosted default: ensured once per (owner, region) per server run, then cached (it is ours to
repair). A customer's own account: only *found* here, with the ongoing policy's Describe calls;
creating them is the backend machine's job (setup policy). It is looked up again at the start
of every cluster, since the customer may change their account between clusters. Each resource
found or made is recorded as a BackendResource row, and a change as a notification.
"""

from __future__ import annotations

import threading

from sqlalchemy import select
from sqlalchemy.orm import Session

from overcast.backends import Provider, provider_for
from overcast.backends.base import AccountInfra, ProviderError, Resource, ServerError
from overcast.reconciler.contexts import Target
from overcast.store.models import Account, Backend, BackendResource
from overcast.store.notify import notify

Infra = AccountInfra  # the name the reconciler's modules use


class InfraCache:
    def __init__(self, provider: Provider | None = None) -> None:
        self.provider = provider or provider_for("aws")
        self._lock = threading.Lock()
        self._known: dict[tuple, Infra] = {}
        # Cluster steps run in parallel: one network (owner, region) is made by one at a time.
        self._net_locks: dict[tuple[str, str], threading.Lock] = {}

    def forget(self, account: Account, region: str) -> None:
        with self._lock:
            self._known = {k: v for k, v in self._known.items()
                           if not (k[0] == account.slug and k[1] == region)}

    def ensure(self, session: Session, account: Account, target: Target, region: str,
               zone: str | None = None) -> Infra:
        """The account's infra; with `zone`, also that zone's subnets (made if missing, which
        in a customer's account fails with PermissionMissing once setup is detached).

        A call without `zone` starts a cluster: a customer's account is then looked at again.
        """
        with self._lock:
            net_lock = self._net_locks.setdefault((target.network_owner, region),
                                                  threading.Lock())
        with net_lock:
            return self._ensure(session, account, target, region, zone)

    def _ensure(self, session: Session, account: Account, target: Target, region: str,
                zone: str | None) -> Infra:
        # The granted buckets are part of the key: a changed s3_read rewrites the role's policy.
        key = (account.slug, region, target.network_owner, tuple(s3_read(session, account)))
        infra = self._known.get(key)
        if infra is None or (zone is None and not target.hosted):
            infra = (self._build(session, account, target, region) if target.hosted
                     else self._find(session, account, target))
            with self._lock:
                self._known[key] = infra
        if zone and (zone not in infra.network.private_subnets
                     or zone not in infra.network.public_subnets):
            infra.network = self.provider.ensure_zone(
                target.ctx, infra.network, target.network_owner, zone,
                recorder(session, account, target, region))
        return infra

    def _build(self, session: Session, account: Account, target: Target, region: str) -> Infra:
        return self.provider.set_up_account(
            target.ctx, account.slug, network_owner=target.network_owner, registry="ecr",
            s3_read=s3_read(session, account),
            report=recorder(session, account, target, region))

    def _find(self, session: Session, account: Account, target: Target) -> Infra:
        backend = session.scalar(select(Backend).where(Backend.account_id == account.id))
        state = backend.state if backend is not None else "ready"
        if state in ("pending", "provisioning"):
            raise ServerError("Waiting for the setup of your AWS account to finish.")
        if state == "error":
            raise ProviderError(f"The setup of your AWS account failed ({backend.reason}); fix "
                           "that and run `overcast setup aws` again.")
        if state == "deleting":
            raise ProviderError("overcast is removing its resources from your AWS account; "
                           "configure the backend again to run clusters there.")
        infra = self.provider.find_account(target.ctx, account.slug)
        if infra is None:
            raise ProviderError(f"No overcast network in your AWS account ({target.ctx.region}): "
                           "run `overcast setup aws` again with the setup policy attached.")
        return infra


def s3_read(session: Session, account: Account) -> list[str]:
    """The buckets the account granted its instance role (none by default)."""
    backend = session.scalar(select(Backend).where(Backend.account_id == account.id))
    return list(backend.s3_read or []) if backend is not None else []


def recorder(session: Session, account: Account, target: Target, region: str):
    """A report callback that records each resource, announcing every change of state."""
    shared = target.network_owner != account.slug

    def report(resource: Resource) -> None:
        scope = target.network_owner if shared and _is_network(resource.kind) else account.slug
        row = session.scalar(select(BackendResource).where(
            BackendResource.scope == scope, BackendResource.region == region,
            BackendResource.kind == resource.kind, BackendResource.aws_id == resource.aws_id))
        if row is None or (row.state != resource.state and resource.state != "found"):
            notify(session, account.id, f"resource-{resource.kind}",
                   f"{resource.kind} {resource.aws_id}"
                   + (f" in {resource.zone}" if resource.zone else f" in {region}")
                   + f": {resource.state}")
        if row is None:
            session.add(BackendResource(
                account_id=None if scope != account.slug else account.id, scope=scope,
                region=region, kind=resource.kind, aws_id=resource.aws_id, zone=resource.zone,
                state=resource.state))
        else:
            row.state = resource.state
        session.commit()

    return report


def _is_network(kind: str) -> bool:
    return kind in {"vpc", "internet-gateway", "route-table", "subnet-public", "subnet-private",
                    "elastic-ip", "nat-gateway"}
