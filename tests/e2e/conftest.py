"""One local cloud and one control plane per test run, shared by the e2e tests."""

from __future__ import annotations

import boto3
import dask
import pytest

from overcast.server.bootstrap import ensure_first_user
from overcast.store.db import Database
from tests.e2e.helpers import environ
from tests.e2e.stack import Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("overcast-home")
    stack = Stack(home)
    with environ(OVERCAST_HOME=str(home)):
        try:
            stack.start_cloud()
            stack.start_server()
            stack.account, stack.token = ensure_first_user(
                "e2e-user", Database(f"sqlite:///{home / 'overcast.db'}"))
            yield stack
        finally:
            stack.stop()


@pytest.fixture
def overcast_config(stack, monkeypatch):
    """The client's dask config pointing at the test stack; S3 reads go to the local cloud."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", stack.endpoint)
    with dask.config.set({"overcast.server": stack.url, "overcast.token": stack.token,
                          "overcast.account": stack.account}):
        yield stack


@pytest.fixture
def aws(stack):
    """boto3 clients against the local cloud, as the operator (IAM is enforced: only its
    IAM-made keys sign), to read back what overcast did."""
    keys = stack.operator_keys()

    def client(service: str, region: str = "us-east-1"):
        return boto3.client(service, region_name=region, endpoint_url=stack.endpoint,
                            aws_access_key_id=keys["access_key_id"],
                            aws_secret_access_key=keys["secret_access_key"])
    return client
