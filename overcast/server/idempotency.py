"""Idempotent cluster creates: the client sends an `Idempotency-Key` (a uuid it makes once per
`overcast.Cluster` and reuses on every retry); the key is stored per account with the cluster
it made, so a retried or duplicated create returns that cluster and never makes a second."""

from __future__ import annotations

import hashlib
import json
import re

from fastapi import HTTPException
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from overcast.store.models import Cluster, IdempotencyKey

HEADER = "Idempotency-Key"
_KEY = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


def check_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _KEY.match(value):
        raise HTTPException(400, f"{HEADER} must be 8-128 letters, digits, '.', '_', ':' or "
                                 f"'-' (e.g. a uuid), made once per cluster and resent on retries.")
    return value


def request_hash(body: BaseModel) -> str:
    text = json.dumps(body.model_dump(mode="json"), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def earlier_cluster(session: Session, account_id: int, key: str | None,
                    digest: str) -> Cluster | None:
    """The cluster an earlier request with this key made, else None; the same key with a
    different request is refused (it would otherwise silently return the wrong cluster)."""
    if key is None:
        return None
    row = session.scalar(select(IdempotencyKey).where(IdempotencyKey.account_id == account_id,
                                                      IdempotencyKey.key == key))
    if row is None:
        return None
    if row.request_hash != digest:
        raise HTTPException(422, f"This {HEADER} was already used for a different cluster "
                                 f"request: send a new key (a new uuid) for a new cluster.")
    return session.get(Cluster, row.cluster_id)


def remember(session: Session, account_id: int, key: str | None, digest: str,
             cluster: Cluster) -> None:
    if key is not None:
        session.add(IdempotencyKey(account_id=account_id, key=key, request_hash=digest,
                                   cluster_id=cluster.id))
