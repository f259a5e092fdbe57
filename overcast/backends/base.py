"""The provider interface: the verbs the reconciler (and the server) need from a cloud.

Everything outside `overcast/backends/` talks to a cloud only through a `Provider` (from
`overcast.backends.provider_for`), with the cloud-neutral types and errors of this module.
`backends/aws/provider.py` implements it on boto3; `tests/unit/fake_provider.py` in memory.
See docs/providers.md for how to add a provider.

Names: ids are called `aws_id` in these types because the database columns and the public JSON
keys are (a contract kept from the first backend); for another cloud they hold its own ids.

Every verb is idempotent (looks up before it creates; launch is keyed by a client token), so a
crash anywhere is repaired by calling it again. Every verb raises a `ProviderError` subclass,
never the cloud SDK's exceptions; messages say what to do and never contain secrets.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# --- errors -------------------------------------------------------------------------------


class ProviderError(Exception):
    """A cloud call failed; `str()` is the message to show. Not retryable unless a subclass
    says so: a plain ProviderError is fatal for what it was doing (e.g. an unknown type)."""

    retryable = False

    def __init__(self, message: str, *, code: str | None = None, action: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.action = action


class ServerError(ProviderError):
    """The cloud failed on its side (5xx, unreachable endpoint): retried with backoff."""

    retryable = True


class Throttled(ServerError):
    """The cloud asked us to slow down: retried with (longer) backoff."""


class QuotaExceeded(ProviderError):
    """An account or region limit: nothing more of this kind can be made until the quota is
    raised. `.quota` names it as the cloud's quota console does. Scaling stops; running
    clusters keep running."""

    def __init__(self, message: str, quota: str, *, code: str | None = None):
        super().__init__(message, code=code)
        self.quota = quota


class CapacityError(ProviderError):
    """No capacity (or no support) for the instance type in `.zone` right now: try another."""

    retryable = True

    def __init__(self, message: str, zone: str | None, *, code: str | None = None):
        super().__init__(message, code=code)
        self.zone = zone


class PermissionMissing(ProviderError):
    """The credentials lack permissions; `.actions` lists them, e.g. ["ec2:CreateSubnet"]."""

    def __init__(self, message: str, actions: list[str], *, code: str | None = None):
        super().__init__(message, code=code, action=actions[0] if actions else None)
        self.actions = actions


class CredentialsInvalid(ProviderError):
    """The cloud does not accept the credentials (unknown, expired, wrong)."""


# Every class, for tests and docs (the fault matrix injects each at each step).
ERROR_CLASSES: tuple[type[ProviderError], ...] = (
    ServerError, Throttled, QuotaExceeded, CapacityError, PermissionMissing, CredentialsInvalid,
    ProviderError)

# --- types --------------------------------------------------------------------------------


@dataclass
class Resource:
    """One cloud resource, as reported while a verb works.

    state: "created" (made just now), "found" (already there), "deleting", "deleted".
    """

    kind: str
    aws_id: str
    zone: str | None = None
    state: str = "found"


Report = Callable[[Resource], None]


def noop(_: Resource) -> None:
    pass


@dataclass
class Network:
    """An account's network as the reconciler sees it: subnets per zone for each tier.
    `native` is the provider's own description (opaque outside the provider)."""

    network_id: str
    public_subnets: dict[str, str] = field(default_factory=dict)
    private_subnets: dict[str, str] = field(default_factory=dict)
    native: Any = None


@dataclass
class AccountInfra:
    """What clusters of an account need in a region: network, instance role, log group."""

    network: Network
    instance_profile: str
    log_group: str


@dataclass
class LaunchSpec:
    role: str  # "scheduler" | "worker"
    subnet_id: str
    security_group_id: str
    instance_type: str
    image_id: str
    instance_profile: str | None
    user_data: str
    tags: dict[str, str]
    spot: bool
    client_token: str  # unique per batch (one call), <= 64 ASCII chars
    # How many identical instances (one user data, one reservation): all or none are made.
    count: int = 1


@dataclass
class InstanceInfo:
    aws_id: str
    state: str  # pending | running | shutting-down | terminated | stopping | stopped
    zone: str
    subnet_id: str | None
    role: str | None
    spot: bool
    private_ip: str | None
    public_ip: str | None
    tags: dict[str, str] = field(default_factory=dict)
    launch_time: datetime | None = None
    # Why it stopped, e.g. "Server.SpotInstanceTermination" (a spot interruption).
    state_reason: str | None = None
    # The client token of the launch that made it (a batch's token is on all its instances).
    launch_token: str | None = None
    account: str | None = None  # the cloud account it runs in, where the answer says


@dataclass
class TypeInfo:
    name: str
    vcpus: int
    memory_mib: int
    gpus: int


@dataclass
class RoleSetup:
    """What a cross-account role for an account must look like (role mode)."""

    role_name: str
    trust_policy: dict[str, Any]


# --- the verbs ----------------------------------------------------------------------------


class Provider(abc.ABC):
    """A cloud. `conn` arguments are what `connect` returned (opaque to callers)."""

    name: str
    # What a spot interruption looks like in InstanceInfo.state_reason.
    spot_interruption_reason: str = ""

    def warm_up(self) -> None:
        """Load what the first calls would (e.g. API models), before they are made: a
        control plane calls it in the background at start. Optional: nothing by default."""
        return None

    # credentials and identity
    @abc.abstractmethod
    def connect(self, region: str, credentials: dict[str, str] | None = None,
                on_call: Callable[[str], None] | None = None) -> Any:
        """A connection with these credentials (None: the operator's own). `on_call` is told
        the permission name of every call made through it (least-privilege recording)."""

    @abc.abstractmethod
    def account_id(self, conn: Any) -> str: ...

    @abc.abstractmethod
    def check_credentials(self, conn: Any) -> dict[str, str]:
        """{"account", "arn"}; CredentialsInvalid if the cloud does not know them."""

    @abc.abstractmethod
    def missing_permissions(self, conn: Any) -> list[str]:
        """The permissions of the policy documents the credentials lack, sorted."""

    @abc.abstractmethod
    def policy_documents(self, deployment_id: str | None = None,
                         role: str | None = None) -> dict[str, dict]:
        """{"setup": {...}, "ongoing": {...}}: what a customer attaches, scoped to a deployment
        id and an account's role where given."""

    @abc.abstractmethod
    def is_temporary_key(self, key_id: str) -> bool: ...

    @abc.abstractmethod
    def mask_key_id(self, key_id: str) -> str: ...

    @abc.abstractmethod
    def role_setup(self, slug: str, trusted_account: str, external_id: str) -> RoleSetup: ...

    @abc.abstractmethod
    def create_access_role(self, conn: Any, slug: str, trusted_account: str,
                           external_id: str, documents: dict[str, dict] | None = None) -> str:
        """Role mode: make the cross-account role with the customer's own credentials."""

    # an account's standing resources
    @abc.abstractmethod
    def zones(self, conn: Any) -> list[str]: ...

    @abc.abstractmethod
    def set_up_account(self, conn: Any, slug: str, *, network_owner: str,
                       registry: str | None, s3_read: Sequence[str] = (),
                       report: Report = noop) -> AccountInfra:
        """Make (or find) the network of `network_owner`, the instance role of `slug` (reading
        only the `s3_read` buckets) and its log group, and with `registry="ecr"` its image
        repository."""

    @abc.abstractmethod
    def find_account(self, conn: Any, slug: str) -> AccountInfra | None:
        """The account's resources, looked up only (ongoing permissions); None: no network."""

    @abc.abstractmethod
    def ensure_zone(self, conn: Any, network: Network, owner: str, zone: str,
                    report: Report = noop) -> Network:
        """The network with subnets in `zone` too (made if missing)."""

    @abc.abstractmethod
    def tear_down_account(self, conn: Any, slug: str, *, network_owner: str | None,
                          report: Report = noop) -> None:
        """Delete everything made for `slug` (and the owner's network); a retryable error
        means something is still shutting down: call again."""

    # clusters
    @abc.abstractmethod
    def open_firewall(self, conn: Any, network: Network, account: str, cluster_id: int,
                      cluster_name: str, ports: list[int], cidr: str) -> str:
        """The cluster's firewall (security group): `ports` from `cidr`, plus all traffic
        between its own machines. Returns its id."""

    @abc.abstractmethod
    def close_firewall(self, conn: Any, cluster_id: int) -> list[str]:
        """Delete the cluster's firewall; returns the ids still in use (call again later)."""

    @abc.abstractmethod
    def instance_types(self, conn: Any, names: list[str]) -> dict[str, TypeInfo]:
        """Unknown names raise a (fatal) ProviderError naming them."""

    @abc.abstractmethod
    def launch(self, conn: Any, specs: Sequence[LaunchSpec]) -> list[InstanceInfo]:
        """Launch the instances, one call per spec: `spec.count` instances or none (an error).
        Idempotent per client token where the cloud is (a retry returns the same instances);
        launched instances carry the token (`InstanceInfo.launch_token`), so those of a call
        whose answer was lost are found again by `list_instances`. No look-up first."""

    @abc.abstractmethod
    def list_instances(self, conn: Any, *, cluster_id: int | None = None,
                       account: str | None = None,
                       include_terminated: bool = False) -> list[InstanceInfo]:
        """Instances of a cluster, or every live one of an account."""

    @abc.abstractmethod
    def terminate(self, conn: Any, ids: list[str]) -> list[str]:
        """Terminate; unknown ids are skipped. Returns those asked."""

    @abc.abstractmethod
    def read_logs(self, conn: Any, group: str, streams: list[str],
                  start_ms: int | None = None) -> dict[str, list[dict[str, Any]]]:
        """{stream: [{"timestamp": ms, "message": str}]}, oldest first; missing streams: []."""
