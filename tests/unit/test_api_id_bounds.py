"""Every integer the API takes in a path or query fits the database's id columns (PostgreSQL's
32-bit `integer`), or the route says it checks the bound itself. Deterministic twin of the
fuzz test: an unbounded id is a 500 on PostgreSQL (and past 2^63 on SQLite) that the fuzzer
finds only when its random draw happens to reach it."""

from __future__ import annotations

import pytest

from overcast.server.app import create_app
from overcast.server.validation import MAX_DB_ID
from overcast.store.db import Database

pytestmark = pytest.mark.timeout(60)
# Agent routes answer 404 for an id that cannot exist (`fits_db`), after the credential check.
CHECKED_IN_HANDLER = {("/api/v1/agent/clusters/{cluster_id}", "cluster_id")}


def integer_parameters(spec: dict) -> list[tuple[str, str, dict]]:
    found = []
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            for param in operation.get("parameters", []):
                schemas = param["schema"].get("anyOf", [param["schema"]])
                for schema in schemas:
                    if schema.get("type") == "integer":
                        found.append((path, param["name"], schema))
    return found


def test_every_integer_parameter_fits_a_postgresql_integer(tmp_path):
    app = create_app(Database(f"sqlite:///{tmp_path / 'overcast.db'}"), run_reconciler=False)
    params = integer_parameters(app.openapi())
    assert params, "the spec has integer parameters (ids, limits)"
    unbounded = [(path, name) for path, name, schema in params
                 if schema.get("maximum", float("inf")) > MAX_DB_ID
                 and not any(path.startswith(prefix) and name == n
                             for prefix, n in CHECKED_IN_HANDLER)]
    assert unbounded == [], f"bound these with validation.DbId / le=MAX_DB_ID: {unbounded}"
