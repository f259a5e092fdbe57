"""Leader election: of the replicas on one database exactly one holds the reconciler lock, and
another takes it when the holder lets go (or dies: its session or file handle closes)."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import text

from overcast.reconciler.leader import Leadership
from overcast.store.db import make_engine


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'overcast.db'}"
    return request.getfixturevalue("postgres").create_database(f"leader_{secrets.token_hex(4)}")


def test_one_leader_then_takeover(url):
    first, second = Leadership(make_engine(url)), Leadership(make_engine(url))
    assert first.try_acquire() is True
    assert second.try_acquire() is False
    assert first.still_leader() and not second.still_leader()
    first.release()  # as a killed process's connection or file closes
    assert second.try_acquire() is True
    assert first.try_acquire() is False
    second.release()


def test_fencing_notices_a_lost_postgres_session(request):
    url = request.getfixturevalue("postgres").create_database(f"fence_{secrets.token_hex(4)}")
    leader, other = Leadership(make_engine(url)), Leadership(make_engine(url))
    assert leader.try_acquire()
    admin = make_engine(url)
    with admin.connect() as conn:  # the leader's session cut off (network, admin, failover)
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_locks "
                          "WHERE locktype = 'advisory' AND granted"))
    assert leader.still_leader() is False
    assert other.try_acquire() is True
    other.release()


def test_in_memory_sqlite_leads():
    assert Leadership(make_engine("sqlite://")).try_acquire() is True
