"""One local cloud and one control plane per test run (and store), shared by the e2e tests.

Test modules marked `@pytest.mark.stores("sqlite", "postgresql")` run once per store: `stack`
is then the SQLite stack or a second one whose control plane keeps its data in PostgreSQL.
"""

from __future__ import annotations

import os

import boto3
import dask
import pytest

from overcast.server.bootstrap import ensure_first_user
from overcast.store.db import Database
from tests.e2e.helpers import environ
from tests.e2e.stack import Stack

STORES = ("sqlite", "postgresql")


def pytest_configure(config):
    # Package sync builds an image of the client's environment (this venv: ~140 packages, over
    # a GB) once per local cloud: only tests/e2e/test_env_builds.py asks for it, with a slim
    # client environment. Every other e2e test's clusters run the VM image's packages.
    # An env variable, so clients the tests start as subprocesses get it too.
    os.environ.setdefault("DASK_OVERCAST__PACKAGE_SYNC", "False")
    dask.config.refresh()
    config.addinivalue_line("markers", "stores(*names): run the module once per control-plane "
                                       "store (sqlite, postgresql)")


def pytest_generate_tests(metafunc):
    marker = metafunc.definition.get_closest_marker("stores")
    if marker is None:
        return
    for name in ("stack", "store"):  # `store` for modules that build a stack of their own
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, marker.args or STORES, indirect=True, scope="module")
            return


@pytest.fixture(scope="module")
def store(request):
    """The store a `stores`-marked module runs on this time ("sqlite" unless parametrized)."""
    return getattr(request, "param", "sqlite")


def _started_stack(tmp_path_factory, database_url: str | None,
                   regions: tuple[str, ...] = ("us-east-1",)):
    home = tmp_path_factory.mktemp("overcast-home")
    stack = Stack(home, database_url=database_url)
    # Every AWS call the control plane makes, per account (test_own_account.py checks them
    # against the IAM policies).
    stack.record = home / "aws-actions.jsonl"
    stack.server_env["OVERCAST_RECORD_AWS_ACTIONS"] = str(stack.record)
    with environ(OVERCAST_HOME=str(home)):
        try:
            stack.start_cloud()
            stack.start_server()
            stack.account, stack.token = ensure_first_user("e2e-user",
                                                           Database(stack.database_url))
            # Clusters boot from the overcast image only: build it before the tests time
            # cluster starts (a first cluster would otherwise wait for the build).
            stack.images = stack.build_images(stack.account, stack.token, regions)
            yield stack
        finally:
            stack.stop()


@pytest.fixture(scope="session")
def sqlite_stack(tmp_path_factory):
    yield from _started_stack(tmp_path_factory, None, ("us-east-1", "us-west-1"))


@pytest.fixture(scope="session")
def postgresql_stack(tmp_path_factory, postgres):
    yield from _started_stack(tmp_path_factory, postgres.create_database("e2e_stack"))


@pytest.fixture(scope="module")
def stack(request):
    """The shared stack: SQLite, or per `stores` parameter the PostgreSQL one."""
    return request.getfixturevalue(f"{getattr(request, 'param', 'sqlite')}_stack")


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

