"""Fixtures shared by the unit tests: fake AWS credentials, in-process moto, and an API app
with two users (`api`: alice, the first user and admin of her account, and bob)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from moto import mock_aws

from overcast.backends.aws import session
from overcast.backends.aws.session import AwsContext
from overcast.server.app import create_app
from overcast.server.auth import issue_token
from overcast.server.bootstrap import create_user, ensure_first_user
from overcast.store.db import Database

REGION = "us-east-1"
DEPLOYMENT = "d-unit-tests"


@pytest.fixture(autouse=True)
def _deployment_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fixed control-plane deployment id (never a file in the developer's data dir)."""
    monkeypatch.setenv("OVERCAST_DEPLOYMENT_ID", DEPLOYMENT)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake keys, and no endpoint or profile of the developer's that would send boto3 elsewhere."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.fixture
def aws(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In-process moto (IAM not enforced) for the test's duration."""
    from moto import settings as moto_settings

    # An in-process local cloud that enforced IAM earlier in the session set this globally.
    monkeypatch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", float("inf"))
    with mock_aws():
        yield


@pytest.fixture
def ctx(aws: None) -> AwsContext:
    """An AwsContext in us-east-1 against in-process moto."""
    return session.context(REGION)


@pytest.fixture
def api(tmp_path, monkeypatch) -> TestClient:
    """The API in-process (no reconciler) on a fresh SQLite database; `api.alice` and `api.bob`
    are their Authorization headers."""
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    db = Database(f"sqlite:///{tmp_path / 'overcast.db'}")
    slug, token = ensure_first_user("alice", db)
    with db.session() as session:
        bob = create_user(session, "bob")
        session.flush()
        bob_token = issue_token(session, bob)
    client = TestClient(create_app(db, run_reconciler=False))
    client.db, client.slug = db, slug
    client.alice = {"Authorization": f"Bearer {token}"}
    client.bob = {"Authorization": f"Bearer {bob_token}"}
    return client


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A reconciler against the fake provider (tests/unit/reconciler_world.py), stopped after
    the test. Modules with a `world` of their own keep theirs."""
    from tests.unit.reconciler_world import make_world

    w = make_world(tmp_path, monkeypatch)
    yield w
    w.reconciler.stop()
