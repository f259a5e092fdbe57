"""Fixtures shared by the unit tests: fake AWS credentials and in-process moto."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto import mock_aws

from overcast.backends.aws import session
from overcast.backends.aws.session import AwsContext

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
def aws(aws_env: None) -> Iterator[None]:
    """In-process moto (IAM not enforced) for the test's duration."""
    with mock_aws():
        yield


@pytest.fixture
def ctx(aws: None) -> AwsContext:
    """An AwsContext in us-east-1 against in-process moto."""
    return session.context(REGION)
