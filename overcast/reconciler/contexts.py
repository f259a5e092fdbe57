"""Which AWS account and credentials a cluster's or account's work uses."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from overcast import crypto, tags
from overcast.backends.aws.session import AwsContext, context
from overcast.store.models import Account, Backend


@dataclass(frozen=True)
class Target:
    """Where an account's resources live: its AWS context, and who owns the network."""

    ctx: AwsContext
    network_owner: str  # "operator" for the hosted default, else the account slug
    hosted: bool


class ContextFactory:
    def __init__(self) -> None:
        self._cache: dict[tuple, AwsContext] = {}
        self._image_owner: str | None = os.environ.get("OVERCAST_IMAGE_OWNER")

    def image_owner(self) -> str:
        """The account that publishes overcast's machine image: the operator's, unless set."""
        if self._image_owner is None:
            self._image_owner = self._get(("operator", "us-east-1"), "us-east-1", {}).account_id()
        return self._image_owner

    def for_account(self, session: Session, account: Account, region: str) -> Target:
        backend = session.scalar(select(Backend).where(Backend.account_id == account.id))
        if backend is None or backend.kind == "hosted":
            return Target(self._get(("operator", region), region, {}), tags.OPERATOR, True)
        creds = json.loads(crypto.decrypt(backend.credentials_encrypted or "{}"))
        key = (account.id, region, backend.updated_at)
        return Target(self._get(key, region, creds), account.slug, False)

    def _get(self, key: tuple, region: str, creds: dict) -> AwsContext:
        if key not in self._cache:
            self._cache[key] = context(region, **creds)
        return self._cache[key]
