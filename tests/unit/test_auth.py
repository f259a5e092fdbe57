"""Passwords, API tokens, teams and members through the API, and the CLI's login hand-off."""

from __future__ import annotations

import threading

import httpx
import pytest
import yaml
from click.testing import CliRunner
from fastapi.testclient import TestClient

from overcast.cli import login_cmd
from overcast.server.app import create_app
from overcast.server.auth import issue_token
from overcast.server.bootstrap import create_user, ensure_first_user
from overcast.server.passwords import PasswordError, hash_password, verify_password
from overcast.store.db import Database

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def api(tmp_path, monkeypatch):
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    db = Database(f"sqlite:///{tmp_path / 'o.db'}")
    slug, token = ensure_first_user("root", db)
    with db.session() as s:
        users = {name: create_user(s, name, password=f"{name} password")
                 for name in ("ann", "ben")}
        s.flush()
        tokens = {name: issue_token(s, user) for name, user in users.items()}
    client = TestClient(create_app(db, run_reconciler=False))
    client.auth_for = lambda name: {"Authorization": f"Bearer {(tokens | {'root': token})[name]}"}
    return client


def test_passwords_are_argon2id_and_checked():
    hashed = hash_password("a long passphrase")
    assert hashed.startswith("$argon2id$") and "a long passphrase" not in hashed
    assert verify_password(hashed, "a long passphrase")
    assert not verify_password(hashed, "a long passphrasE")
    assert not verify_password(None, "anything")  # no hash: never a match
    with pytest.raises(PasswordError, match="at least 8"):
        hash_password("short")


def test_tokens_create_list_revoke(api):
    ann = api.auth_for("ann")
    made = api.post("/api/v1/tokens", json={"name": "laptop"}, headers=ann)
    assert made.status_code == 201
    secret, token_id = made.json()["token"], made.json()["id"]
    listed = api.get("/api/v1/tokens", headers=ann)
    assert secret not in listed.text and all("token" not in row for row in listed.json())
    assert {"name": "laptop", "prefix": secret[:8]}.items() <= listed.json()[0].items()
    # Someone else's token: not found, and untouched.
    assert api.delete(f"/api/v1/tokens/{token_id}",
                      headers=api.auth_for("ben")).status_code == 404
    mine = {"Authorization": f"Bearer {secret}"}
    assert api.get("/api/v1/me", headers=mine).status_code == 200
    assert api.delete(f"/api/v1/tokens/{token_id}", headers=ann).status_code == 204
    assert api.get("/api/v1/me", headers=mine).status_code == 401


def test_teams_members_and_roles(api):
    ann, ben = api.auth_for("ann"), api.auth_for("ben")
    team = api.post("/api/v1/teams", json={"name": "Data Crew"}, headers=ann)
    assert team.json() == {"slug": "data-crew", "is_team": True, "role": "admin"}
    assert api.post("/api/v1/teams", json={"name": "data crew"},
                    headers=ben).status_code == 400  # taken
    assert api.get("/api/v1/accounts/data-crew", headers=ben).status_code == 404
    added = api.post("/api/v1/accounts/data-crew/members",
                     json={"username": "ben", "role": "member"}, headers=ann)
    assert added.status_code == 201
    assert {"slug": "data-crew", "is_team": True, "role": "member"} in \
        api.get("/api/v1/accounts", headers=ben).json()
    # A member runs clusters but does not manage members or the backend.
    assert api.post("/api/v1/accounts/data-crew/members", json={"username": "root"},
                    headers=ben).status_code == 403
    assert api.put("/api/v1/accounts/data-crew/backend", json={"backend": "hosted"},
                   headers=ben).status_code == 403
    assert api.post("/api/v1/accounts/data-crew/clusters", json={"name": "c1"},
                    headers=ben).status_code == 201
    # The last admin stays an admin; personal accounts have no other members.
    demote = api.put("/api/v1/accounts/data-crew/members/ann", json={"role": "member"},
                     headers=ann)
    assert demote.status_code == 400 and "last admin" in demote.json()["detail"]
    assert api.post("/api/v1/accounts/ann/members", json={"username": "ben"},
                    headers=ann).status_code == 400
    assert api.put("/api/v1/accounts/data-crew/members/ben", json={"role": "admin"},
                   headers=ann).json()["role"] == "admin"
    assert api.delete("/api/v1/accounts/data-crew/members/ann", headers=ben).status_code == 204
    assert api.get("/api/v1/accounts/data-crew", headers=ann).status_code == 404


def test_users_and_passwords_by_api(api):
    assert api.post("/api/v1/users", json={"username": "cy", "password": "cy password"},
                    headers=api.auth_for("ann")).status_code == 403  # site admins only
    made = api.post("/api/v1/users", json={"username": "cy", "password": "cy password"},
                    headers=api.auth_for("root"))
    assert made.json() == {"username": "cy", "default_account": "cy"}
    # The `overcast up` user has no password yet: the token is enough to set one.
    assert api.put("/api/v1/me/password", json={"new_password": "root password"},
                   headers=api.auth_for("root")).status_code == 204
    wrong = api.put("/api/v1/me/password", json={"current_password": "nope",
                                                 "new_password": "another one"},
                    headers=api.auth_for("root"))
    assert wrong.status_code == 400


def test_cli_handoff_accepts_only_its_own_state():
    handoff = login_cmd.Handoff()
    result: dict = {}
    waiter = threading.Thread(target=lambda: result.update(answer=handoff.wait(10)))
    waiter.start()
    url = f"http://127.0.0.1:{handoff.port}/callback"
    forged = httpx.post(url, data={"token": "oc_forged", "state": "wrong"})
    assert forged.status_code == 400
    ok = httpx.post(url, data={"token": "oc_real", "state": handoff.state, "account": "ann"})
    assert ok.status_code == 200 and "close this window" in ok.text
    waiter.join(10)
    assert result["answer"]["token"] == "oc_real"


def test_login_with_a_token_writes_the_dask_config(api, tmp_path, monkeypatch):
    monkeypatch.setenv("DASK_CONFIG", str(tmp_path / "dask"))
    import dask.config
    monkeypatch.setattr(dask.config, "PATH", str(tmp_path / "dask"))
    monkeypatch.setattr(login_cmd.httpx, "get", lambda url, **kw: api.get(
        url.replace("http://testserver", ""), headers=kw["headers"]))
    token = api.auth_for("ann")["Authorization"].split()[1]
    result = CliRunner().invoke(login_cmd.login, ["--server", "http://testserver",
                                                  "--token", token])
    assert result.exit_code == 0, result.output
    written = yaml.safe_load((tmp_path / "dask" / "overcast.yaml").read_text())["overcast"]
    assert written == {"server": "http://testserver", "token": token, "account": "ann"}
    other = CliRunner().invoke(login_cmd.login, ["--server", "http://testserver", "--token",
                                                 token, "--account", "root"])
    assert other.exit_code != 0 and "not a member" in other.output
