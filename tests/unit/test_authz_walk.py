"""Walk EVERY API route as an outsider, a team member and a team admin.

Routes come from the app itself, so a new route is walked without touching this file. Each
case runs on a fresh copy of the same world (so a DELETE in one case cannot hide a leak in
another) and checks: outsiders get 401/403/404 on the team's routes and change nothing of
the team's; members get 403 exactly on admin-only routes (those depending on `admin_of`);
admins are never refused; no body ever holds data of an account the caller is not in, nor
any stored secret.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import threading
import time
from types import SimpleNamespace

import httpx
import pytest
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import select

from overcast import crypto
from overcast.server.app import create_app
from overcast.server.auth import admin_of, issue_token
from overcast.store.db import Database
from overcast.store.models import (
    Account,
    ApiToken,
    Backend,
    Cluster,
    Instance,
    Membership,
    Notification,
    User,
)
from tests.unit.worlds import team_and_outsider, template_home

pytestmark = pytest.mark.timeout(120)

# Strings that only the team's (acme) members may ever see, and the outsider's own.
TEAM_DATA = ["canary-cluster", "i-canary0001", "canary notification text", "ada-canary",
             "mo-canary", "AKIA...CANA"]
OUTSIDER_DATA = ["eve-canary-cluster", "i-evecanary01", "eve notification text"]
# Secrets no user-token response may ever contain.
SECRETS = ["AKIACANARYKEYID12345", "CANARYSECRETKEY123", "CANARY-NODE-KEY", "cluster-secret",
           "dockerhub-canary-token", "BEGIN ENCRYPTED"]
PARAMS = {"slug": "acme", "name": "canary-cluster", "aws_id": "i-canary0001",
          "username": "mo-canary"}


def _cluster(session, account: Account, name: str, aws_id: str, note: str) -> Cluster:
    tls = {"ca_cert": "CA", "client_cert": "CC", "client_key": "CANARY-CLIENT-KEY",
           "node_cert": "NC", "node_key": "CANARY-NODE-KEY"}
    cluster = Cluster(account_id=account.id, name=name, region="us-east-1", n_workers=1,
                      state="running", token_hash="x" * 64,
                      token_encrypted=crypto.encrypt("cluster-secret"),
                      tls_encrypted=crypto.encrypt(json.dumps(tls)), options={})
    session.add(cluster)
    session.flush()
    session.add(Instance(cluster_id=cluster.id, role="scheduler", aws_id=aws_id,
                         instance_type="m6i.large", zone="us-east-1a", state="ready"))
    session.add(Notification(account_id=account.id, cluster_id=cluster.id, cluster_name=name,
                             event_type="test", message=note))
    return cluster


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with template_home(tmp_path_factory, "walk") as (home, db):
        with db.session() as s:
            ada, mo, eve, acme = team_and_outsider(
                s, "acme", ("ada-canary", "ada password"), ("mo-canary", "mo password"),
                ("eve-canary", "eve password"))
            team_cluster = _cluster(s, acme, "canary-cluster", "i-canary0001",
                                    "canary notification text")
            _cluster(s, s.get(Account, eve.default_account_id), "eve-canary-cluster",
                     "i-evecanary01", "eve notification text")
            s.add(Backend(account_id=acme.id, kind="aws", region="us-east-1",
                          key_id_masked="AKIA...CANA", registry_type="docker_hub",
                          registry_username="ada-canary",
                          credentials_encrypted=crypto.encrypt(json.dumps(
                              {"access_key_id": "AKIACANARYKEYID12345",
                               "secret_access_key": "CANARYSECRETKEY123"})),
                          registry_secret_encrypted=crypto.encrypt("dockerhub-canary-token")))
            tokens = {"admin": issue_token(s, ada), "member": issue_token(s, mo),
                      "outsider": issue_token(s, eve)}
            s.flush()
            ids = {"cluster_id": str(team_cluster.id),
                   "token_id": str(s.scalar(select(ApiToken.id).where(ApiToken.user_id == ada.id)))}
        db.engine.dispose()
        yield SimpleNamespace(home=home, template=home / "template.db", tokens=tokens,
                              params={**PARAMS, **ids})


class FakeLogs:
    """Stands in for CloudWatch and the operator's AWS account (no AWS in unit tests)."""

    contexts = SimpleNamespace(operator=lambda region: SimpleNamespace(
        account_id=lambda: "123456789012"))

    def __call__(self, session, cluster):
        return {i.aws_id: [{"timestamp": 0, "message": f"log of {cluster.name}"}]
                for i in cluster.instances}


def make_app(db: Database):
    app = create_app(db, run_reconciler=False)
    app.state.log_reader = FakeLogs()
    return app


def api_routes():
    db = Database("sqlite://")
    app = create_app(db, run_reconciler=False)
    found = []
    for ctx in iter_route_contexts(app.routes):
        route = ctx.original_route
        if isinstance(route, APIRoute) and ctx.path.startswith("/api/v1"):
            for method in sorted(ctx.methods or ()):
                found.append((method, ctx.path, route))
    return found


ROUTES = api_routes()


def needs_admin(route: APIRoute) -> bool:
    def walk(dep) -> bool:
        return dep.call is admin_of or any(walk(d) for d in dep.dependencies)
    return walk(route.dependant)


def is_stream(route: APIRoute) -> bool:
    return route.response_class is StreamingResponse or route.path.endswith("/stream")


def url_for(path: str, params: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: params.get(m.group(1), "x"), path)


def team_state(db: Database) -> str:
    """Everything of the team that an outsider must not be able to change."""
    with db.session() as s:
        acme = s.scalar(select(Account).where(Account.slug == "acme"))
        rows = {
            "clusters": [(c.name, c.state, c.n_workers) for c in s.scalars(
                select(Cluster).where(Cluster.account_id == acme.id))],
            "members": sorted((m.user_id, m.role) for m in s.scalars(
                select(Membership).where(Membership.account_id == acme.id))),
            "backend": [(b.kind, b.region, b.state, b.credentials_encrypted) for b in s.scalars(
                select(Backend).where(Backend.account_id == acme.id))],
            "tokens": [(t.id, t.revoked) for t in s.scalars(select(ApiToken).join(User).where(
                User.username.in_(["ada-canary", "mo-canary"])))],
            "users": [(u.username, u.password_hash) for u in s.scalars(select(User))],
        }
    return json.dumps(rows, default=str)


def check_body(role: str, url: str, text: str) -> None:
    foreign = {"outsider": TEAM_DATA, "member": OUTSIDER_DATA, "admin": OUTSIDER_DATA}[role]
    leaked = [c for c in foreign + SECRETS if c in text and c not in url]
    assert not leaked, f"{role} {url} leaked {leaked}: {text[:300]}"


def check_status(role: str, method: str, path: str, route: APIRoute, status: int,
                 text: str) -> None:
    where = f"{role} {method} {path} -> {status} {text[:200]}"
    if "/agent/" in path:  # agents authenticate with a cluster token, never a user token
        assert status in (401, 404), where
    elif "{slug}" not in path:
        assert status not in (500,), where
    elif role == "outsider":
        assert status in (401, 403, 404), where
    else:
        refused_as_outsider = status == 404 and "No account" in text
        assert not refused_as_outsider and status != 401, where
        if role == "member" and needs_admin(route):
            assert status == 403, where
        elif status == 403:
            pytest.fail(f"not refused expected: {where}")
    assert status < 500 or status == 502, where


@pytest.mark.parametrize("role", ["outsider", "member", "admin"])
@pytest.mark.parametrize("method, path, route", [r for r in ROUTES if not is_stream(r[2])],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_route(world, tmp_path, role, method, path, route):
    shutil.copy(world.template, tmp_path / "case.db")
    db = Database(f"sqlite:///{tmp_path / 'case.db'}")
    before = team_state(db)
    url = url_for(path, world.params)
    with TestClient(make_app(db)) as client:
        response = client.request(method, url, json={} if method in ("POST", "PUT") else None,
                                  headers={"Authorization": f"Bearer {world.tokens[role]}"})
    check_status(role, method, path, route, response.status_code, response.text)
    check_body(role, url, response.text)
    if role == "outsider":
        assert team_state(db) == before, f"outsider {method} {url} changed the team's data"
    db.engine.dispose()


def test_every_route_is_walked():
    """The walk found the routes we know of (if this fails, enumeration broke, not authz)."""
    paths = {p for _, p, _ in ROUTES}
    assert {"/api/v1/accounts/{slug}/clusters", "/api/v1/accounts/{slug}/members/{username}",
            "/api/v1/tokens/{token_id}", "/api/v1/accounts/{slug}/backend"} <= paths
    assert len(ROUTES) >= 30


def _serve(app) -> tuple[str, object]:
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


@pytest.mark.parametrize("role", ["outsider", "member", "admin"])
def test_streams(world, tmp_path, role):
    """Event streams never end, so they are walked against a real server: read the head."""
    streams = [r for r in ROUTES if is_stream(r[2])]
    shutil.copy(world.template, tmp_path / "case.db")
    db = Database(f"sqlite:///{tmp_path / 'case.db'}")
    base, server = _serve(make_app(db))
    try:
        for method, path, route in streams:
            url = url_for(path, world.params)
            headers = {"Authorization": f"Bearer {world.tokens[role]}"}
            with httpx.stream(method, base + url, headers=headers, timeout=10) as response:
                text = ""
                if response.status_code == 200:
                    for chunk in response.iter_text():
                        text += chunk
                        if "\n\n" in text:
                            break
                else:
                    text = response.read().decode()
                check_status(role, method, path, route, response.status_code, text)
                check_body(role, url, text)
    finally:
        server.should_exit = True


def test_changing_backend_or_members_needs_admin():
    """The rule, independent of how a route is written: writes to an account's backend or
    membership are for its admins. (The walk derives admin-only from `admin_of`; this
    catches a route that forgot it.)"""
    writes = [(m, p, r) for m, p, r in ROUTES if m != "GET" and
              re.search(r"/accounts/\{slug\}/(backend|members)", p)]
    assert len(writes) >= 6
    for method, path, route in writes:
        assert needs_admin(route), f"{method} {path} must depend on admin_of"
