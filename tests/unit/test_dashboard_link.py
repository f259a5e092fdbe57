"""The dashboard link's credential through the API: in a cluster's detail for its members, not in
lists, notifications, the stored row or another account's view."""

from __future__ import annotations

import pytest
from cryptography import x509
from fastapi.testclient import TestClient
from sqlalchemy import select

from overcast import crypto
from overcast.dashboardcred import dashboard_token
from overcast.server.app import create_app
from overcast.server.auth import issue_token
from overcast.server.bootstrap import create_user, ensure_first_user
from overcast.store.db import Database
from overcast.store.models import Cluster, Instance
from tests.unit.identity_docs import Identities

pytestmark = pytest.mark.timeout(60)
BARE = "https://127.10.0.3:8787/status"


@pytest.fixture
def api(tmp_path, monkeypatch):
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    db = Database(f"sqlite:///{tmp_path / 'overcast.db'}")
    slug, token = ensure_first_user("alice", db)
    with db.session() as session:
        bob = create_user(session, "bob")
        session.flush()
        bob_token = issue_token(session, bob)
    client = TestClient(create_app(db, run_reconciler=False))
    client.db, client.slug = db, slug
    client.alice = {"Authorization": f"Bearer {token}"}
    client.bob = {"Authorization": f"Bearer {bob_token}"}
    client.identities = Identities(tmp_path, monkeypatch)
    return client


def scheduler_ready(api) -> str:
    return ready_cluster(api)[1]


def ready_cluster(api) -> tuple[int, str, str]:
    """A cluster whose scheduler reported ready (as its agent does): (id, dashboard token,
    cluster token)."""
    created = api.post(f"/api/v1/accounts/{api.slug}/clusters", headers=api.alice,
                       json={"name": "d", "n_workers": 0}).json()
    with api.db.session() as s:
        cluster = s.get(Cluster, created["id"])
        cluster_token = crypto.decrypt(cluster.token_encrypted)
        s.add(Instance(cluster_id=cluster.id, role="scheduler", aws_id="i-dash",
                       instance_type="m6i.large", state="booting"))
    r = api.post(f"/api/v1/agent/clusters/{created['id']}/instances/i-dash/ready",
                 headers={"Authorization": f"Bearer {cluster_token}",
                          **api.identities.headers("i-dash")},
                 json={"address": "tls://127.10.0.3:8786", "dashboard_address": BARE})
    assert r.status_code == 200, r.text
    return created["id"], dashboard_token(cluster_token), cluster_token


def test_the_detail_carries_the_token_and_nothing_else_does(api):
    token = scheduler_ready(api)
    base = f"/api/v1/accounts/{api.slug}"
    detail = api.get(f"{base}/clusters/d", headers=api.alice).json()
    assert detail["dashboard_link"] == f"{BARE}?token={token}"
    listed = api.get(f"{base}/clusters", headers=api.alice).json()
    assert [c["dashboard_link"] for c in listed] == [BARE]
    notes = api.get(f"{base}/notifications", headers=api.alice).text
    assert token not in notes
    assert api.get(f"{base}/clusters/d", headers=api.bob).status_code == 404
    with api.db.session() as s:  # stored without it: shown only by deriving it again
        assert s.scalar(select(Cluster.dashboard_link)) == BARE
    assert token not in "\n".join(api.db.engine.raw_connection().iterdump())


def test_the_scheduler_gets_a_dashboard_certificate_for_its_addresses(api):
    cluster_id, _, cluster_token = ready_cluster(api)
    path = f"/api/v1/agent/clusters/{cluster_id}/dashboard-cert"
    agent = {"Authorization": f"Bearer {cluster_token}"}
    r = api.post(path, headers=agent, json={"ips": ["127.10.0.3", "2001:db8::1"]})
    assert r.status_code == 200, r.text
    cert = x509.load_pem_x509_certificate(r.json()["cert"].encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {
        "127.10.0.3", "2001:db8::1"}
    bad = api.post(path, headers=agent, json={"ips": ["not-an-ip"]})
    assert bad.status_code == 400 and "IP addresses" in bad.json()["detail"]
    assert api.post(path, headers=agent, json={"ips": []}).status_code == 422
    assert api.post(path, headers=api.alice, json={"ips": ["127.0.0.1"]}).status_code == 404
