"""The API under retries and hostile input: idempotent creates, reads that never write, ids
and durations out of range, and the SQLite file's settings."""

from __future__ import annotations

import os
import stat
import threading
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from overcast.server.app import create_app
from overcast.server.bootstrap import ensure_first_user
from overcast.store.db import Database
from overcast.store.models import ApiToken, Cluster, IdempotencyKey

pytestmark = pytest.mark.timeout(90)
BIG = 2**63  # one past the largest 64-bit id
PG_BIG = 2**31  # one past PostgreSQL's largest integer id


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request, tmp_path, monkeypatch):
    """The app on either store: ids, races and NULs behave differently in PostgreSQL."""
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres").create_database(f"api_{uuid.uuid4().hex}")
    else:
        url = f"sqlite:///{tmp_path / 'overcast.db'}"
    db = Database(url)
    slug, token = ensure_first_user("alice", db)
    with TestClient(create_app(db, run_reconciler=False)) as client:
        client.db, client.slug = db, slug
        client.headers.update({"Authorization": f"Bearer {token}"})
        client.clusters = f"/api/v1/accounts/{slug}/clusters"
        yield client
    db.engine.dispose()


def count(db: Database, model) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_a_retried_create_returns_the_same_cluster(api):
    key = {"Idempotency-Key": "6f1c2a52-0d5e-4c1e-9f0a-1b2c3d4e5f60"}
    first = api.post(api.clusters, json={"n_workers": 1}, headers=key)
    again = api.post(api.clusters, json={"n_workers": 1}, headers=key)
    assert first.status_code == 201 and again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count(api.db, Cluster) == 1
    found = api.get(api.clusters, params={"idempotency_key": key["Idempotency-Key"]}).json()
    assert [c["id"] for c in found] == [first.json()["id"]]


def test_the_same_key_for_another_request_is_refused(api):
    key = {"Idempotency-Key": "key-0000000001"}
    assert api.post(api.clusters, json={"n_workers": 1}, headers=key).status_code == 201
    other = api.post(api.clusters, json={"n_workers": 2}, headers=key)
    assert other.status_code == 422 and "new key" in other.json()["detail"]
    assert count(api.db, Cluster) == 1


def test_racing_duplicates_make_one_cluster(api):
    """Eight identical requests at once (a retry racing its original): one cluster, and
    every answer names it."""
    key = {"Idempotency-Key": "race-000000000001"}
    answers: list = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        try:
            answers.append(api.post(api.clusters, json={"name": "racy", "n_workers": 1},
                                    headers=key))
        except Exception as exc:  # noqa: BLE001 - shown by the assertion below
            answers.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(getattr(r, "status_code", 0) for r in answers) == [200] * 7 + [201], \
        [getattr(r, "text", repr(r)) for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert count(api.db, Cluster) == 1 and count(api.db, IdempotencyKey) == 1


def test_a_bad_key_is_a_400_that_says_what_to_send(api):
    r = api.post(api.clusters, json={}, headers={"Idempotency-Key": "short"})
    assert r.status_code == 400 and "uuid" in r.json()["detail"]


def test_reads_do_not_write_token_use_until_the_flush(api):
    with api.db.session() as session:
        assert session.scalar(select(ApiToken.last_used_at)) is None
    for _ in range(3):
        assert api.get(api.clusters).status_code == 200
    with api.db.session() as session:
        assert session.scalar(select(ApiToken.last_used_at)) is None  # no write per request
    listed = api.get("/api/v1/tokens").json()
    assert listed[0]["last_used_at"] is not None  # shown at once, from memory
    assert api.app.state.last_used.flush() == 1
    with api.db.session() as session:
        assert session.scalar(select(ApiToken.last_used_at)) is not None


def test_health_answers_from_memory(api):
    r = api.get("/api/v1/health", headers={"Authorization": ""})
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["slots"] >= 1


@pytest.mark.parametrize("path", [
    f"/api/v1/agent/clusters/{BIG}/tls",
    f"/api/v1/agent/clusters/{BIG}/scheduler",
    f"/api/v1/agent/clusters/{-BIG}/tls",
    f"/api/v1/agent/clusters/{PG_BIG}/tls",
])
def test_agent_ids_out_of_range_are_not_found(api, path):
    assert api.get(path, headers={"Authorization": ""}).status_code == 401  # credential first
    r = api.get(path, headers={"Authorization": "Bearer x"})
    assert r.status_code == 404, r.text


def test_agent_posts_with_huge_ids_and_bodies(api):
    base = f"/api/v1/agent/clusters/{BIG}/instances/i-1"
    for suffix, body in (("/ready", {"address": "x"}), ("/heartbeat", {"workers": BIG}),
                         ("/failed", {"reason": "x"})):
        assert api.post(base + suffix, json=body,
                        headers={"Authorization": "Bearer x"}).status_code == 404


@pytest.mark.parametrize("params, headers", [
    ({"after_id": BIG}, {}), ({"after_id": -1}, {}), ({"after_id": PG_BIG}, {}),
    ({}, {"Last-Event-ID": str(BIG)}), ({}, {"Last-Event-ID": "abc"}),
    ({"level": "bogus"}, {}),
])
def test_notification_bounds_are_4xx(api, params, headers):
    path = f"/api/v1/accounts/{api.slug}/notifications"
    if headers:
        path += "/stream"
    r = api.get(path, params=params, headers=headers)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["detail"]


def test_token_ids_out_of_range(api):
    assert api.delete(f"/api/v1/tokens/{BIG}").status_code == 422
    assert api.delete(f"/api/v1/tokens/{PG_BIG}").status_code == 422
    assert api.delete("/api/v1/tokens/999").status_code == 404


@pytest.mark.parametrize("field", ["idle_timeout", "no_client_timeout"])
@pytest.mark.parametrize("value", ["", "1e400", "soon", -5, "   "])
def test_bad_durations_are_422_naming_the_field(api, field, value):
    r = api.post(api.clusters, json={field: value})
    assert r.status_code == 422, r.text
    assert field in r.text
    assert count(api.db, Cluster) == 0


def test_fractional_workers_are_refused(api):
    r = api.post(api.clusters, json={"n_workers": 1.5})
    assert r.status_code == 422 and "n_workers" in r.text


@pytest.mark.parametrize("name", ["", "   ", "-", "api", "x"])
def test_bad_team_names_are_refused(api, name):
    r = api.post("/api/v1/teams", json={"name": name})
    assert r.status_code == 400 and "team name" in r.json()["detail"]


def test_sqlite_file_is_private_and_waits_for_locks(tmp_path):
    path = tmp_path / "fresh" / "overcast.db"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    os.chmod(path, 0o644)  # an older install's world-readable file is tightened
    Database(f"sqlite:///{path}")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.parametrize("call", [
    lambda api: api.get(api.clusters + "/a%00b"),
    lambda api: api.get(f"/api/v1/accounts/{api.slug}/notifications",
                        params={"cluster": "a\x00b"}),
    lambda api: api.post(api.clusters, content=b'{"name": "a\\u0000b"}',
                         headers={"Content-Type": "application/json"}),
])
def test_nul_characters_are_refused_on_every_database(api, call):
    r = call(api)
    assert r.status_code == 400 and "NUL" in r.json()["detail"]
    assert count(api.db, Cluster) == 0


def test_first_secrets_encrypted_at_once_share_one_key(tmp_path, monkeypatch):
    from overcast import crypto

    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    crypto._fernet.cache_clear()
    barrier, texts, errors = threading.Barrier(8), [], []

    def encrypt() -> None:
        barrier.wait()
        try:
            texts.append(crypto.encrypt("secret"))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=encrypt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    crypto._fernet.cache_clear()
    assert errors == [] and [crypto.decrypt(t) for t in texts] == ["secret"] * 8
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]
