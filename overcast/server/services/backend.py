"""An account's cloud backend: configure (checked before anything is stored), reset, teardown.

Shared by the REST API and the dashboard wizard. Every failure is a `BackendConfigError` whose
message says what to change; it never contains a secret (we build messages from our own text,
masked key ids and AWS error codes, never from the submitted values).
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from overcast import crypto, options, tags
from overcast.backends import provider_for
from overcast.backends.base import CredentialsInvalid, ProviderError
from overcast.reconciler.contexts import recorder_sink
from overcast.store.models import Account, Backend, BackendResource, Cluster, utcnow
from overcast.store.notify import notify

KINDS = ("hosted", "aws")
REGISTRIES = ("ecr", "docker_hub")
ACTIVE_CLUSTER_STATES = ("pending", "starting", "running", "stopping")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
ALIASES = {"region": "aws_region", "access_key_id": "aws_access_key_id",
           "secret_access_key": "aws_secret_access_key", "session_token": "aws_session_token",
           "role_arn": "aws_role_arn"}
KNOWN = {"backend", "aws_region", "aws_access_key_id", "aws_secret_access_key",
         "aws_session_token", "aws_role_arn", "zone", "firewall", "registry_type",
         "registry_username", "registry_access_token", "s3_read"}
NOT_STRINGS = {"firewall": dict, "s3_read": list}  # every other option is a string
# Formats AWS gives its keys: checked before any AWS call, so a typo or a swapped pair is
# named as such instead of becoming an opaque signature error.
_KEY_ID = re.compile(r"^(AKIA|ASIA)[A-Z0-9]{16}$")
_SECRET = re.compile(r"^[A-Za-z0-9/+=]{40}$")
# S3 bucket naming rules (3-63 of lowercase, digits, dots, dashes; letter/digit at both ends).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MAX_S3_READ = 50


def _PROVIDER():
    return provider_for("aws")


class BackendConfigError(Exception):
    """Bad backend settings or credentials; `message` is for the user, `status` the HTTP code."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def policy_documents(role: str | None = None) -> dict[str, dict]:
    """{"setup": {...}, "ongoing": {...}}: what a customer attaches to overcast's IAM user,
    scoped to this control plane's deployment id (and the account `role` slug, when given)."""
    return _PROVIDER().policy_documents(tags.deployment_id(), role)


def get_backend(session: Session, account: Account) -> Backend | None:
    return session.scalar(select(Backend).where(Backend.account_id == account.id))


def backend_resources(session: Session, account: Account,
                      backend: Backend | None) -> list[BackendResource]:
    """What overcast made or found in the customer's account (none for the hosted default)."""
    if backend is None or backend.kind != "aws":
        return []
    return list(session.scalars(select(BackendResource).where(
        BackendResource.scope == account.slug, BackendResource.region == backend.region)
        .order_by(BackendResource.id)))


def external_id(session: Session, account: Account) -> str:
    """The external id this account's cross-account role must require (made once, kept)."""
    backend = get_backend(session, account)
    if backend is None:
        backend = Backend(account_id=account.id, kind="hosted")
        session.add(backend)
    if not backend.external_id:
        backend.external_id = f"overcast-{secrets.token_hex(16)}"
        session.flush()
    return backend.external_id


def configure_backend(session: Session, account: Account, params: dict[str, Any]) -> Backend:
    """Check `params` and the credentials in them, then store them (encrypted) and start setup.

    Nothing is written unless every check passes. `backend="hosted"` resets to the default.
    """
    p = _normalise(params)
    kind = p.get("backend") or "aws"
    if kind not in KINDS:
        raise BackendConfigError(f"backend must be one of {', '.join(KINDS)}, not {kind!r}.")
    s3_read = _s3_read(p)
    if kind == "hosted":
        backend = reset_backend(session, account)
        backend.s3_read = s3_read
        _announce_s3_read(session, account, s3_read)
        return backend
    region, zone, firewall = _placement(p)
    registry = _registry(p)
    if _active_clusters(session, account):
        raise BackendConfigError("Stop this account's clusters before changing its backend.",
                                 409)
    creds, masked, ctx = _credentials(session, account, p, region)
    identity = _check_identity(ctx, creds)
    _check_permissions(ctx)

    backend = get_backend(session, account) or Backend(account_id=account.id)
    session.add(backend)
    backend.kind, backend.region, backend.zone, backend.firewall = "aws", region, zone, firewall
    backend.registry_type, backend.registry_username = registry["type"], registry["username"]
    backend.registry_secret_encrypted = (crypto.encrypt(registry["token"])
                                         if registry["token"] else None)
    backend.credentials_encrypted = crypto.encrypt(json.dumps(creds))
    backend.key_id_masked, backend.role_arn = masked, creds.get("role_arn")
    backend.s3_read = s3_read
    backend.state, backend.reason, backend.updated_at = "pending", None, utcnow()
    # Rows describe the previous place (hosted, or another AWS account): setup reports anew.
    session.execute(delete(BackendResource).where(BackendResource.scope == account.slug))
    notify(session, account.id, "backend-configured",
           f"Backend set to your AWS account {identity['account']} in {region}"
           f" ({'role ' + creds['role_arn'] if 'role_arn' in creds else 'key ' + masked}); "
           "setting up its network, instance role and log group")
    session.flush()
    return backend


def reset_backend(session: Session, account: Account) -> Backend:
    """Back to the hosted default; resources in the customer's account are left as they are."""
    backend = get_backend(session, account) or Backend(account_id=account.id)
    session.add(backend)
    was_aws = backend.kind == "aws"
    if was_aws and _active_clusters(session, account):
        raise BackendConfigError("Stop this account's clusters before changing its backend.",
                                 409)
    backend.kind, backend.region, backend.zone, backend.firewall = "hosted", "us-east-1", None, None
    backend.registry_type, backend.registry_username = "ecr", None
    backend.credentials_encrypted = backend.registry_secret_encrypted = None
    backend.key_id_masked = backend.role_arn = None
    backend.s3_read = None
    backend.state, backend.reason, backend.updated_at = "ready", None, utcnow()
    if was_aws:
        notify(session, account.id, "backend-reset",
               "Backend reset to the hosted default. Resources in your AWS account were left "
               "as they are; `overcast setup aws --teardown` (before resetting) removes them.")
    session.flush()
    return backend


def request_teardown(session: Session, account: Account) -> Backend:
    """Ask the reconciler to delete everything overcast made in the customer's account, then
    reset to the hosted default."""
    backend = get_backend(session, account)
    if backend is None or backend.kind != "aws":
        raise BackendConfigError("This account uses the hosted default: there is nothing of "
                                 "overcast in an AWS account of yours to remove. (If you reset "
                                 "already, configure the AWS backend again first.)", 409)
    if _active_clusters(session, account):
        raise BackendConfigError("Stop this account's clusters before tearing down.", 409)
    backend.state, backend.reason = "deleting", None
    notify(session, account.id, "backend-teardown",
           "Deleting every resource overcast created in your AWS account")
    session.flush()
    return backend


def set_s3_read(session: Session, account: Account, buckets: Any) -> Backend:
    """Name the S3 buckets the account's VMs may read (the Account page). Hosted: applied to
    the instance role before the next cluster starts. Own AWS account: set-up runs again (the
    role lives there), which needs the setup policy attached."""
    grants = _s3_read(_normalise({"s3_read": buckets}))
    backend = get_backend(session, account) or Backend(account_id=account.id, kind="hosted")
    session.add(backend)
    if backend.kind == "aws" and backend.state not in ("ready", "error"):
        raise BackendConfigError("The backend is busy (setting up or removing); try again "
                                 "once it is ready.", 409)
    backend.s3_read = grants
    if backend.kind == "aws":
        backend.state, backend.reason, backend.updated_at = "pending", None, utcnow()
    _announce_s3_read(session, account, grants)
    session.flush()
    return backend


# -- checks ---------------------------------------------------------------------------------
def _normalise(params: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise BackendConfigError("The backend options must be a JSON object of option: value.")
    p = {ALIASES.get(k, k): v for k, v in params.items() if v is not None}
    unknown = sorted(set(p) - KNOWN)
    if unknown:
        raise BackendConfigError(f"Unknown backend option(s): {', '.join(unknown)}. Known: "
                                 f"{', '.join(sorted(KNOWN))}.")
    for key, value in p.items():
        wanted = NOT_STRINGS.get(key, str)
        if not isinstance(value, wanted):
            kind = {dict: "an object", list: "a list of bucket names", str: "a string"}[wanted]
            raise BackendConfigError(f"{key} must be {kind}, not {type(value).__name__}.")
        if wanted is str and not value.strip():
            raise BackendConfigError(f"{key} is empty: give a value, or leave it out.")
    return {k: v.strip() if isinstance(v, str) else v for k, v in p.items()}


def _s3_read(p: dict[str, Any]) -> list[str]:
    """The buckets the account's instance role may read (s3:GetObject/ListBucket)."""
    buckets = p.get("s3_read") or []
    if len(buckets) > MAX_S3_READ:
        raise BackendConfigError(f"s3_read names {len(buckets)} buckets; at most "
                                 f"{MAX_S3_READ} are allowed.")
    for name in buckets:
        if not isinstance(name, str) or not _BUCKET.match(name) or ".." in name:
            shown = name if isinstance(name, str) and len(name) <= 80 else type(name).__name__
            raise BackendConfigError(
                f"s3_read: {shown!r} is not an S3 bucket name (3-63 lowercase letters, digits, "
                "dots and dashes; no s3:// prefix, no key).")
    return sorted(set(buckets))


def _announce_s3_read(session: Session, account: Account, buckets: list[str]) -> None:
    if buckets:
        notify(session, account.id, "backend-s3-read",
               f"Clusters of {account.slug} may read the S3 buckets {', '.join(buckets)}; the "
               "instance role is updated before the next cluster starts")


def _check_key_format(key_id: str, secret: str) -> None:
    """Refuse malformed keys before any AWS call; the message never contains either value."""
    if _SECRET.match(key_id) and _KEY_ID.match(secret):
        raise BackendConfigError(
            "The access key id and the secret access key look swapped: aws_access_key_id "
            "starts with AKIA (20 characters), aws_secret_access_key is the 40-character "
            "secret. Give each in its own field.")
    if not _KEY_ID.match(key_id):
        raise BackendConfigError(
            "aws_access_key_id is not an AWS access key id: it is 20 characters, AKIA (or "
            "ASIA) followed by 16 capital letters and digits. Copy it again from the IAM "
            "console.")
    if not _SECRET.match(secret):
        raise BackendConfigError(
            "aws_secret_access_key is not an AWS secret access key: it is 40 characters of "
            "letters, digits, + and /. Copy it again (it is shown once, when the key is "
            "made).")


def _placement(p: dict[str, Any]) -> tuple[str, str | None, dict | None]:
    try:
        region = options.check_region(p.get("aws_region") or options.DEFAULT_REGION)
        zone = options.check_zone(p["zone"], region) if p.get("zone") else None
        firewall = options.check_firewall(p["firewall"]) if p.get("firewall") else None
    except options.OptionError as exc:
        raise BackendConfigError(str(exc)) from None
    return region, zone, firewall


def _registry(p: dict[str, Any]) -> dict[str, Any]:
    kind = p.get("registry_type") or "ecr"
    if kind not in REGISTRIES:
        raise BackendConfigError(f"registry_type must be one of {', '.join(REGISTRIES)}.")
    user, token = p.get("registry_username"), p.get("registry_access_token")
    if kind == "docker_hub" and not (user and token):
        raise BackendConfigError("Docker Hub needs registry_username and registry_access_token "
                                 "(an access token from hub.docker.com, not your password).")
    if kind == "ecr":
        user = token = None  # ECR uses the AWS credentials
    return {"type": kind, "username": user, "token": token}


def _credentials(session: Session, account: Account, p: dict[str, Any],
                 region: str) -> tuple[dict[str, str], str | None, Any]:
    key_id, secret = p.get("aws_access_key_id"), p.get("aws_secret_access_key")
    role_arn = p.get("aws_role_arn")
    if key_id and secret:
        _check_key_format(key_id, secret)
    elif key_id and not _KEY_ID.match(key_id):
        _check_key_format(key_id, "x" * 40)
    if p.get("aws_session_token"):
        raise BackendConfigError(
            "A session token means temporary credentials, which expire and would stop your "
            "clusters: give the long-lived access key of an IAM user (AKIA...), or use role "
            "mode (aws_role_arn).")
    if key_id and _PROVIDER().is_temporary_key(key_id):
        masked_id = _PROVIDER().mask_key_id(key_id)
        raise BackendConfigError(
            f"The access key {masked_id} is temporary (ASIA...: issued by STS, "
            "it expires): give the long-lived access key of an IAM user (AKIA...), or use "
            "role mode (aws_role_arn).")
    if role_arn and not _ROLE_ARN.match(role_arn):
        raise BackendConfigError("aws_role_arn is not an IAM role ARN "
                                 "(arn:aws:iam::<12-digit account>:role/<name>).")
    if role_arn and not (key_id or secret):
        creds = {"role_arn": role_arn, "external_id": external_id(session, account)}
        masked = None
    else:
        if not key_id or not secret:
            which = "aws_access_key_id" if not key_id else "aws_secret_access_key"
            raise BackendConfigError(f"{which} is missing: give both the access key id and "
                                     "the secret access key of the IAM user.")
        creds, masked = {"access_key_id": key_id, "secret_access_key": secret}, \
            _PROVIDER().mask_key_id(key_id)
        if role_arn:
            creds.update(role_arn=role_arn, external_id=external_id(session, account))
    try:  # role mode assumes the role right away
        ctx = _PROVIDER().connect(region, creds, recorder_sink("probe", account.slug))
    except ProviderError as exc:
        raise BackendConfigError(_role_message(creds, exc)) from None
    return creds, masked, ctx


def _role_message(creds: dict[str, str], exc: ProviderError) -> str:
    return (f"overcast could not assume {creds.get('role_arn')} ({exc.code or 'error'}). The "
            f"role must trust overcast's AWS account and require the external id "
            f"{creds.get('external_id')} (`overcast setup aws --role` makes it so).")


def _check_identity(ctx: Any, creds: dict[str, str]) -> dict[str, str]:
    try:
        return _PROVIDER().check_credentials(ctx)
    except CredentialsInvalid as exc:
        raise BackendConfigError(
            f"AWS does not accept these credentials ({exc.code}): check the access key id and "
            "secret access key (copy them again from the IAM console), and that the key is "
            "active.") from None
    except ProviderError as exc:
        if "role_arn" in creds:
            raise BackendConfigError(_role_message(creds, exc)) from None
        raise BackendConfigError(f"Could not check the credentials: {exc}") from None


def _check_permissions(ctx: Any) -> None:
    documents = policy_documents()
    try:
        missing = _PROVIDER().missing_permissions(ctx)
    except ProviderError as exc:
        raise BackendConfigError(f"Could not check the permissions: {exc}") from None
    if not missing:
        return
    parts = []
    for name, document in documents.items():
        these = [a for a in missing if a in _actions(document)]
        if these:
            parts.append(f"from the {name} policy: {', '.join(these)}")
    raise BackendConfigError(
        f"The credentials are missing {len(missing)} permission(s) overcast needs, "
        f"{'; '.join(parts)}. Attach overcast's setup and ongoing policies (`overcast setup "
        "aws --print-policy setup|ongoing`) to the IAM user or role, then try again.")


def _actions(document: dict) -> set[str]:
    out: set[str] = set()
    for statement in document["Statement"]:
        acts = statement["Action"]
        out.update([acts] if isinstance(acts, str) else acts)
    return out


def _active_clusters(session: Session, account: Account) -> bool:
    return session.scalar(select(Cluster.id).where(
        Cluster.account_id == account.id, Cluster.state.in_(ACTIVE_CLUSTER_STATES))
        .limit(1)) is not None


__all__ = ["BackendConfigError", "backend_resources", "configure_backend",
           "external_id", "get_backend", "policy_documents", "request_teardown",
           "reset_backend", "set_s3_read"]
