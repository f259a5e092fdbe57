"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

import secrets

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from overcast.store.db import Database
from overcast.store.models import Base

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A fresh, empty database of each store the control plane supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    return request.getfixturevalue("postgres").create_database(f"migrations_{secrets.token_hex(6)}")


def test_migrated_schema_matches_the_models(database_url):
    db = Database(database_url)
    db.migrate()
    db.migrate()  # idempotent: a second start changes nothing
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    db.engine.dispose()
    assert diff == []
