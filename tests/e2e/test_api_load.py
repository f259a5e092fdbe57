"""The control plane under load never wedges: 50 clients listing and 100 concurrent creates
(20 of them sent twice at once, all with the client's retries) get no server error, health
answers within 1 s throughout, and each Idempotency-Key made exactly one cluster."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest

from tests.e2e.apiload import ApiServer, delete_all, run_load

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture
def server(tmp_path):
    srv = ApiServer(tmp_path, dict(os.environ))
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


def test_load_gets_no_server_error_and_one_cluster_per_key(server):
    result = asyncio.run(run_load(server, creates=100, duplicates=20, listers=50))

    assert result.create_errors == []
    assert result.server_errors == 0, result.statuses
    assert result.health_seconds and max(result.health_seconds) < 1.0, \
        f"health took up to {max(result.health_seconds):.2f} s"
    assert len(result.created) == 100
    # Every answer for a key (the duplicates' too) names one cluster, and keys do not share.
    ids = {key: set(answers) for key, answers in result.created.items()}
    assert all(len(v) == 1 for v in ids.values()), ids
    assert len({next(iter(v)) for v in ids.values()}) == 100

    headers = {"Authorization": f"Bearer {server.token}"}
    listed = httpx.get(f"{server.url}/api/v1/accounts/{server.slug}/clusters",
                       headers=headers, timeout=30).json()
    assert sorted(c["id"] for c in listed) == sorted(next(iter(v)) for v in ids.values())
    some_key = next(iter(ids))
    by_key = httpx.get(f"{server.url}/api/v1/accounts/{server.slug}/clusters",
                       params={"idempotency_key": some_key}, headers=headers, timeout=30).json()
    assert [c["id"] for c in by_key] == list(ids[some_key])

    deleted = asyncio.run(delete_all(server, [c["name"] for c in listed]))
    assert deleted == {202: 100}, deleted
