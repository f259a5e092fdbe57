"""In-process moto with IAM enforced, an operator admin and customer accounts, for the
backend tests (test_backend_*.py, test_least_privilege*.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from moto import mock_aws

from overcast.backends.aws import policies
from overcast.localcloud import motofixes, motoserver
from overcast.localcloud.main import create_operator_user, new_aws_account
from overcast.server.bootstrap import ensure_first_user
from overcast.store.db import Database
from overcast.store.models import Account

REGION = "us-east-1"


@contextmanager
def enforced_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """moto in-process, IAM checked on every request; yields the operator's admin keys
    (also set as the process's default credentials, as the control plane has them)."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    motofixes.apply()
    with mock_aws():
        operator = create_operator_user()
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", operator["access_key_id"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", operator["secret_access_key"])
        motoserver.set_enforce_iam(True)
        try:
            yield operator
        finally:
            motoserver.set_enforce_iam(False)


def customer(setup: bool = True, ongoing: bool = True, drop: tuple[str, ...] = ()) -> dict:
    """A new AWS account whose IAM user has the policies (minus the `drop` actions)."""
    docs = {}
    for name in policies.NAMES:
        doc = policies.load(name)
        for statement in doc["Statement"]:
            statement["Action"] = [a for a in statement["Action"] if a not in drop]
        doc["Statement"] = [s for s in doc["Statement"] if s["Action"]]
        wanted = setup if name == "setup" else ongoing
        docs[name] = doc if wanted else {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}]}
    return new_aws_account(json.dumps(docs["setup"]), json.dumps(docs["ongoing"]))


def keys_of(acct: dict) -> dict[str, str]:
    return {"aws_access_key_id": acct["access_key_id"],
            "aws_secret_access_key": acct["secret_access_key"]}


def database(tmp_path, monkeypatch) -> tuple[Database, str, str]:
    """A fresh control-plane database with one admin user; (db, account slug, API token)."""
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    db = Database(f"sqlite:///{tmp_path / 'overcast.db'}")
    slug, token = ensure_first_user("alice", db)
    return db, slug, token


def account(session, slug: str) -> Account:
    from sqlalchemy import select

    return session.scalar(select(Account).where(Account.slug == slug))
