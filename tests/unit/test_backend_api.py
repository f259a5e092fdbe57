"""Backend routes: policies, admin-only changes, secrets never in a response."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from overcast.backends.aws import policies
from overcast.server.app import create_app
from overcast.server.auth import issue_token
from overcast.store.models import Membership
from tests.unit.backend_fixtures import (
    account,
    customer,
    database,
    enforced_aws,
    keys_of,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def api(tmp_path, monkeypatch):
    db, slug, token = database(tmp_path, monkeypatch)
    from overcast.server.bootstrap import create_user

    with db.session() as session:
        bob = create_user(session, "bob")
        session.add(Membership(user_id=bob.id, account_id=account(session, slug).id,
                               role="member"))
        bob_token = issue_token(session, bob)
    client = TestClient(create_app(db, run_reconciler=False))
    client.slug = slug
    client.admin = {"Authorization": f"Bearer {token}"}
    client.member = {"Authorization": f"Bearer {bob_token}"}
    return client


def test_policies_are_served(api):
    for name in policies.NAMES:
        # Scoped to this control plane's deployment id (tests/unit/conftest.py).
        assert api.get(f"/api/v1/policies/{name}").json() == policies.load(name, "d-unit-tests")
        scoped = api.get(f"/api/v1/policies/{name}", params={"account": "alice"}).json()
        assert scoped == policies.load(name, "d-unit-tests", "alice")
    assert api.get("/api/v1/policies/setup", params={"account": "A B"}).status_code == 422
    assert api.get("/api/v1/policies/admin").status_code == 404


def test_backend_flow_and_no_secret_in_responses(api, monkeypatch):
    url = f"/api/v1/accounts/{api.slug}/backend"
    doc = api.get(url, headers=api.member).json()
    assert (doc["kind"], doc["state"], doc["resources"]) == ("hosted", "ready", [])
    with enforced_aws(monkeypatch):
        acct = customer()
        secret = acct["secret_access_key"]
        responses = []
        r = api.put(url, headers=api.member, json=keys_of(acct))
        assert r.status_code == 403
        responses.append(r)
        r = api.put(url, headers=api.admin, json={**keys_of(acct), "aws_secret_access_key":
                                                  secret[:-1] + "x"})
        assert r.status_code == 400 and "does not accept" in r.json()["detail"]
        responses.append(r)
        r = api.put(url, headers=api.admin, json=keys_of(acct))
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["kind"], body["state"], body["credentials"]) == ("aws", "pending", "keys")
        assert body["aws_access_key_id"] == "*" * 16 + acct["access_key_id"][-4:]
        responses += [r, api.get(url, headers=api.member),
                      api.get(f"/api/v1/accounts/{api.slug}/notifications", headers=api.admin),
                      api.get(url + "/role-setup", headers=api.admin)]
        role = responses[-1].json()
        assert role["trusted_account_id"] == "123456789012"
        assert role["external_id"] in str(role["trust_policy"])
        assert api.get(url + "/role-setup", headers=api.member).status_code == 403
        r = api.delete(url, headers=api.admin)
        assert r.json()["kind"] == "hosted"
        responses.append(r)
        for response in responses:
            assert secret not in response.text and acct["access_key_id"] not in response.text
