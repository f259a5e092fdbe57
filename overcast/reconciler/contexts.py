"""Which AWS account and credentials a cluster's or account's work uses.

With `OVERCAST_RECORD_AWS_ACTIONS=<file>` (or `overcast server --record-aws-actions FILE`)
every AWS call made through a context from here is appended to that file as one JSON line
{"t", "scope", "account", "action"}: the least-privilege test compares them with the policies.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from overcast import crypto, tags
from overcast.backends import Provider, provider_for
from overcast.store.models import Account, Backend

RECORD_ENV = "OVERCAST_RECORD_AWS_ACTIONS"
# The keys of the encrypted credentials JSON that are context() arguments.
CONTEXT_KEYS = ("access_key_id", "secret_access_key", "role_arn", "external_id")
_record_lock = threading.Lock()


@dataclass(frozen=True)
class Target:
    """Where an account's resources live: its AWS context, and who owns the network."""

    ctx: Any  # the provider's connection (an AwsContext for AWS)
    network_owner: str  # "operator" for the hosted default, else the account slug
    hosted: bool


def recorder_sink(scope: str, account: str):
    """A call sink that appends each call to the record file, or None if recording is off."""
    path = os.environ.get(RECORD_ENV)
    if not path:
        return None

    def sink(action: str) -> None:
        line = json.dumps({"t": time.time(), "scope": scope, "account": account,
                           "action": action})
        with _record_lock, open(path, "a") as f:
            f.write(line + "\n")

    return sink


def credentials_of(backend: Backend) -> dict[str, str]:
    """The context() arguments stored (encrypted) for a customer's backend."""
    if not backend.credentials_encrypted:
        return {}
    creds = json.loads(crypto.decrypt(backend.credentials_encrypted))
    return {k: v for k, v in creds.items() if k in CONTEXT_KEYS and v}


class ContextFactory:
    def __init__(self, provider: Provider | None = None) -> None:
        self.provider = provider or provider_for("aws")
        self._cache: dict[tuple, Any] = {}
        self._image_owner: str | None = os.environ.get("OVERCAST_IMAGE_OWNER")
        self._lock = threading.Lock()

    def image_owner(self) -> str:
        """The account that publishes overcast's machine image: the operator's, unless set."""
        if self._image_owner is None:
            self._image_owner = self.provider.account_id(self.operator("us-east-1"))
        return self._image_owner

    def operator(self, region: str) -> Any:
        """The operator's own credentials (boto3's default chain)."""
        return self._get(("operator", region), region, {}, tags.OPERATOR)

    def for_account(self, session: Session, account: Account, region: str) -> Target:
        backend = session.scalar(select(Backend).where(Backend.account_id == account.id))
        if backend is None or backend.kind == "hosted":
            return Target(self.operator(region), tags.OPERATOR, True)
        # A new updated_at (new keys, reset, re-configure) means a new context.
        key = (account.id, region, backend.updated_at)
        return Target(self._get(key, region, credentials_of(backend), account.slug),
                      account.slug, False)

    def _get(self, key: tuple, region: str, creds: dict, scope: str) -> Any:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self.provider.connect(region, creds,
                                                         recorder_sink(scope, scope))
            return self._cache[key]
