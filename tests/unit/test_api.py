"""The REST API without AWS: auth, account isolation, validation, no secrets in responses."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from overcast.store.models import Cluster, User

pytestmark = pytest.mark.timeout(60)


def test_me_lists_the_personal_account(api):
    me = api.get("/api/v1/me", headers=api.alice).json()
    assert me == {"username": "alice", "default_account": "alice",
                  "accounts": [{"slug": "alice", "role": "admin"}]}


def test_missing_or_wrong_token_is_401(api):
    assert api.get("/api/v1/me").status_code == 401
    assert api.get("/api/v1/me", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_tokens_are_stored_hashed(api):
    token = api.alice["Authorization"].split()[1]
    dump = "\n".join(api.db.engine.raw_connection().iterdump())
    assert token not in dump


def test_create_cluster_and_hide_its_secrets(api):
    r = api.post(f"/api/v1/accounts/{api.slug}/clusters", headers=api.alice,
                 json={"name": "c1", "n_workers": 2})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["state"] == "pending" and body["n_workers"] == 2
    with api.db.session() as session:
        cluster = session.scalar(select(Cluster).where(Cluster.name == "c1"))
        assert "PRIVATE KEY" not in cluster.tls_encrypted
    listed = api.get(f"/api/v1/accounts/{api.slug}/clusters", headers=api.alice).text
    shown = api.get(f"/api/v1/accounts/{api.slug}/clusters/c1", headers=api.alice).text
    for text in (r.text, listed, shown):
        assert "PRIVATE KEY" not in text and "token" not in json.loads(text.strip("[]") or "{}")
    again = api.post(f"/api/v1/accounts/{api.slug}/clusters", headers=api.alice,
                     json={"name": "c1", "n_workers": 1})
    assert again.status_code == 409 and "already pending" in again.json()["detail"]


@pytest.mark.parametrize("body, fragment", [
    ({"n_workers": -1}, "out of range"),
    ({"name": "Bad Name!"}, "is not valid"),
    ({"backend_options": {"region": "mars-1"}}, "not supported"),
    ({"backend_options": {"firewall": {"ports": [70000]}}}, "1-65535"),
    ({"worker_gpu": 2}, "one GPU"),
])
def test_bad_input_is_400_and_nothing_is_stored(api, body, fragment):
    r = api.post(f"/api/v1/accounts/{api.slug}/clusters", headers=api.alice, json=body)
    assert r.status_code == 400 and fragment in r.json()["detail"]
    with api.db.session() as session:
        assert session.scalars(select(Cluster)).all() == []


def test_other_accounts_are_invisible(api):
    api.post(f"/api/v1/accounts/{api.slug}/clusters", headers=api.alice, json={"name": "mine"})
    for method, path in [("GET", "/clusters"), ("GET", "/clusters/mine"),
                         ("DELETE", "/clusters/mine"), ("GET", "/notifications"),
                         ("GET", "/clusters/mine/credentials")]:
        r = api.request(method, f"/api/v1/accounts/{api.slug}{path}", headers=api.bob)
        assert r.status_code == 404, (method, path)
        assert "mine" not in r.text or "No account" in r.text


def test_agent_routes_need_the_cluster_token(api):
    r = api.post(f"/api/v1/accounts/{api.slug}/clusters", headers=api.alice, json={"name": "c"})
    cluster_id = r.json()["id"]
    assert api.get(f"/api/v1/agent/clusters/{cluster_id}/tls").status_code == 401
    assert api.get(f"/api/v1/agent/clusters/{cluster_id}/tls",
                   headers=api.alice).status_code == 404


def test_stop_asks_for_stopped_and_notifies(api):
    api.post(f"/api/v1/accounts/{api.slug}/clusters", headers=api.alice, json={"name": "s"})
    r = api.delete(f"/api/v1/accounts/{api.slug}/clusters/s", headers=api.alice)
    # Desired state: the reconciler (the only writer of `state`) moves it to stopping.
    assert r.status_code == 202 and r.json()["desired_state"] == "stopped"
    assert r.json()["state"] == "pending"
    events = api.get(f"/api/v1/accounts/{api.slug}/notifications", headers=api.alice).json()
    assert [e["event_type"] for e in events] == ["cluster-stop", "cluster-requested"]
    with api.db.session() as session:
        assert session.scalar(select(User).where(User.username == "bob")) is not None
