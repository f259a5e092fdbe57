"""Shared test settings: every test gets a private OVERCAST_HOME and dask config dir."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_dask_config(tmp_path_factory, monkeypatch):
    # Never read or write the developer's own ~/.config/dask in tests.
    monkeypatch.setenv("DASK_CONFIG", str(tmp_path_factory.getbasetemp() / "dask-config"))


@pytest.fixture(scope="session")
def postgres():
    """One throwaway PostgreSQL server for the whole run (started on first use, then stopped);
    tests take a database of their own with `postgres.create_database(name)`."""
    from tests.pgserver import PostgresServer, missing_reason

    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()
