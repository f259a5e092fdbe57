"""Dashboard pages: sign-in, cookies, CSRF on every form, 404 across accounts, no secrets."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from overcast import crypto
from overcast.server.app import create_app
from overcast.store.db import Database
from overcast.store.models import Backend, Cluster, Instance
from tests.unit.worlds import team_and_outsider, template_home

pytestmark = pytest.mark.timeout(60)
PARAMS = {"slug": "acme", "name": "web-cluster", "token_id": "1", "username": "mo",
          "name.json": "setup"}
SECRETS = ("AKIAWEBSECRETKEY0001", "WEBSECRETACCESSKEY", "hub-token-secret", "NODE-KEY",
           "CLIENT-KEY", "cluster-token-secret")


class FakeLogs:
    def __call__(self, session, cluster):
        return {i.aws_id: [{"timestamp": 0, "message": "hello from " + i.role}]
                for i in cluster.instances}


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The world, built once (password hashing and migrations are slow); copied per test."""
    with template_home(tmp_path_factory, "web") as (home, db):
        with db.session() as s:
            _, _, _, acme = team_and_outsider(s, "acme", ("ada", "ada password"),
                                              ("mo", "mo password"), ("eve", "eve password"))
            tls = {"ca_cert": "CA", "client_cert": "CC", "client_key": "CLIENT-KEY",
                   "node_cert": "NC", "node_key": "NODE-KEY"}
            cluster = Cluster(account_id=acme.id, name="web-cluster", region="us-east-1",
                              n_workers=1, state="running", token_hash="x" * 64, options={},
                              token_encrypted=crypto.encrypt("cluster-token-secret"),
                              tls_encrypted=crypto.encrypt(json.dumps(tls)),
                              dashboard_link="http://127.10.0.3:8787")
            s.add(cluster)
            s.flush()
            s.add(Instance(cluster_id=cluster.id, role="scheduler", aws_id="i-web1",
                           instance_type="m6i.large", zone="us-east-1b", spot=True, state="ready"))
            s.add(Backend(account_id=acme.id, kind="aws", region="eu-west-1",
                          key_id_masked="AKIA...0001", registry_type="docker_hub",
                          registry_username="acmehub", state="ready",
                          credentials_encrypted=crypto.encrypt(json.dumps(
                              {"access_key_id": "AKIAWEBSECRETKEY0001",
                               "secret_access_key": "WEBSECRETACCESSKEY"})),
                          registry_secret_encrypted=crypto.encrypt("hub-token-secret")))
        db.engine.dispose()
        yield home


@pytest.fixture
def site(template, tmp_path, monkeypatch):
    monkeypatch.setenv("OVERCAST_HOME", str(template))  # the same secret.key
    shutil.copy(template / "template.db", tmp_path / "o.db")
    db = Database(f"sqlite:///{tmp_path / 'o.db'}")
    app = create_app(db, run_reconciler=False)
    app.state.log_reader = FakeLogs()
    return app


def client_for(app, username: str | None = None) -> TestClient:
    client = TestClient(app, follow_redirects=False)
    if username:
        page = client.get("/login")
        r = client.post("/login", data={"csrf_token": csrf_of(page.text), "username": username,
                                         "password": f"{username} password", "next": "/"})
        assert r.status_code == 303, r.text
    return client


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _page_routes() -> list[tuple[str, str]]:
    app = create_app(Database("sqlite://"), run_reconciler=False)
    return [(method, ctx.path) for ctx in iter_route_contexts(app.routes)
            if isinstance(ctx.original_route, APIRoute) and not ctx.path.startswith("/api/")
            for method in ctx.methods or ()]


PAGE_ROUTES = _page_routes()


def page_routes(method: str) -> list[str]:
    return [path for m, path in PAGE_ROUTES if m == method]


def fill(path: str) -> str:
    path = path.replace("{name}.json", "setup.json")
    return re.sub(r"\{(\w+)\}", lambda m: PARAMS.get(m.group(1), "x"), path)


def test_sign_in_sets_a_safe_cookie_and_sign_out_ends_it(site):
    client = TestClient(site, follow_redirects=False)
    page = client.get("/login")
    assert "httponly" in page.headers["set-cookie"].lower()  # the anonymous CSRF cookie
    r = client.post("/login", data={"csrf_token": csrf_of(page.text), "username": "ada",
                                    "password": "ada password", "next": "/a/acme/account"})
    cookie = r.headers["set-cookie"].lower()
    assert r.status_code == 303 and r.headers["location"] == "/a/acme/account"
    assert "httponly" in cookie and "samesite=lax" in cookie
    key = client.cookies["overcast_session"]
    home = client.get("/a/acme/clusters")
    assert home.status_code == 200 and "web-cluster" in home.text
    assert home.headers["cache-control"] == "no-store" and "frame-ancestors" in \
        home.headers["content-security-policy"]
    client.post("/logout", data={"csrf_token": csrf_of(home.text)})
    again = TestClient(site, follow_redirects=False, cookies={"overcast_session": key})
    assert again.get("/a/acme/clusters").status_code == 303  # the old cookie is dead


def test_wrong_password_and_open_redirects(site):
    client = TestClient(site, follow_redirects=False)
    page = client.get("/login")
    bad = client.post("/login", data={"csrf_token": csrf_of(page.text), "username": "ada",
                                      "password": "nope nope"})
    assert bad.status_code == 400 and "Wrong username or password" in bad.text
    assert "overcast_session" not in client.cookies
    ok = client.post("/login", data={"csrf_token": csrf_of(page.text), "username": "ada",
                                     "password": "ada password", "next": "//evil.example"})
    assert ok.headers["location"] == "/"


def test_pages_need_sign_in(site):
    client = TestClient(site, follow_redirects=False)
    for path in page_routes("GET"):
        if path in ("/login", "/signup") or path.startswith("/static"):
            continue
        r = client.get(fill(path))
        assert r.status_code in (303, 404), path
        if r.status_code == 303 and path != "/":
            assert r.headers["location"].startswith("/login?next="), path


def test_every_form_carries_a_csrf_token(site):
    client = client_for(site, "ada")
    for path in page_routes("GET"):
        if path.endswith("events"):  # endless streams, no forms
            continue
        r = client.get(fill(path))
        for form in re.findall(r"<form[^>]*method=\"post\"[^>]*>.*?</form>", r.text, re.S):
            assert 'name="csrf_token"' in form, (path, form[:200])


@pytest.mark.parametrize("path", page_routes("POST"))
def test_posts_without_the_csrf_token_are_refused(site, path):
    client = client_for(site, "ada")
    r = client.post(fill(path), data={"csrf_token": "forged", "name": "x", "username": "mo"})
    assert r.status_code == 403, (path, r.status_code)
    page = client.get("/a/acme/account")
    evil = client.post(fill(path), data={"csrf_token": csrf_of(page.text)},
                       headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403, path


def test_other_accounts_pages_are_404(site):
    client = client_for(site, "eve")
    token = csrf_of(client.get("/profile").text)
    for path in page_routes("GET") + page_routes("POST"):
        if "{slug}" not in path:
            continue
        url = fill(path)
        r = client.request("POST" if path in page_routes("POST") else "GET", url,
                           data={"csrf_token": token})
        assert r.status_code == 404, (path, r.status_code)
        assert "web-cluster" not in r.text and "acmehub" not in r.text


def test_member_cannot_change_the_backend(site):
    client = client_for(site, "mo")
    account = client.get("/a/acme/account")
    assert account.status_code == 200 and "Only admins of acme" in account.text
    assert 'id="edit-backend"' not in account.text and 'id="reset-backend"' not in account.text
    assert client.get("/a/acme/backend/edit").status_code == 403
    token = csrf_of(account.text)
    for path in ("/a/acme/backend", "/a/acme/backend/reset", "/a/acme/members",
                 "/a/acme/members/ada/remove"):
        r = client.post(path, data={"csrf_token": token, "kind": "hosted", "username": "eve"})
        assert r.status_code == 403, path
    assert "your AWS account" in client.get("/a/acme/account").text  # unchanged


def test_no_secret_is_ever_rendered(site):
    client = client_for(site, "ada")
    seen = []
    for path in page_routes("GET"):
        if path.endswith("events"):
            continue
        r = client.get(fill(path))
        seen.append(r.text)
        for secret in SECRETS:
            assert secret not in r.text, (path, secret)
    account = client.get("/a/acme/account").text
    assert "AKIA...0001" in account and "eu-west-1" in account and "acmehub" in account


def test_cluster_page_shows_instances_and_dashboard(site):
    client = client_for(site, "mo")
    page = client.get("/a/acme/clusters/web-cluster").text
    for text in ("i-web1", "scheduler", "us-east-1b", "yes", "http://127.10.0.3:8787"):
        assert text in page
    logs = client.get("/a/acme/clusters/web-cluster/logs.json").json()
    assert logs == {"streams": {"i-web1": [{"timestamp": 0, "message": "hello from scheduler"}]}}


def test_backend_events_end_when_ready(site):
    client = client_for(site, "mo")
    text = client.get("/a/acme/backend/events").text
    assert text.count("data: ") == 2 and "event: end" in text
    assert '"state": "ready"' in text and "WEBSECRET" not in text


def test_teams_and_members_from_the_pages(site):
    client = client_for(site, "eve")
    token = csrf_of(client.get("/teams/new").text)
    r = client.post("/teams", data={"csrf_token": token, "name": "Eve Labs"})
    assert r.status_code == 303 and r.headers["location"] == "/a/eve-labs/account"
    r = client.post("/a/eve-labs/members", data={"csrf_token": token, "username": "mo",
                                                 "role": "member"})
    assert r.status_code == 303
    assert 'data-member="mo"' in client.get("/a/eve-labs/account").text
    last = client.post("/a/eve-labs/members/eve/remove", data={"csrf_token": token})
    assert last.status_code == 400 and "last admin" in last.text
    assert client.post("/a/eve-labs/members/mo/remove",
                       data={"csrf_token": token}).status_code == 303
    assert 'data-member="mo"' not in client.get("/a/eve-labs/account").text


def test_new_token_is_shown_once(site):
    client = client_for(site, "ada")
    token = csrf_of(client.get("/profile").text)
    made = client.post("/profile/tokens", data={"csrf_token": token, "name": "laptop"}).text
    secret = re.search(r'id="new-token">([^<]+)<', made).group(1)
    listed = client.get("/profile").text
    assert secret not in listed and secret[:8] in listed
    me = TestClient(site).get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.json()["username"] == "ada"


def test_cli_handoff_posts_only_to_loopback(site):
    client = client_for(site, "ada")
    state = "s" * 24
    page = client.get(f"/login?cli=40123&state={state}")
    assert page.status_code == 200 and 'id="approve-cli"' in page.text
    r = client.post("/cli-login", data={"csrf_token": csrf_of(page.text), "cli": "40123",
                                        "state": state})
    assert 'action="http://127.0.0.1:40123/callback"' in r.text
    assert "form-action http://127.0.0.1:40123/callback" in r.headers["content-security-policy"]
    for bad in ("80", "abc", "99999"):
        assert client.get(f"/login?cli={bad}&state={state}").status_code == 400


def test_account_page_shows_and_starts_image_builds(site):
    ada, mo = client_for(site, "ada"), client_for(site, "mo")
    page = ada.get("/a/acme/account")
    assert 'id="no-images"' in page.text and 'id="build-image"' in page.text
    assert 'id="build-image"' not in mo.get("/a/acme/account").text  # admins only
    assert mo.post("/a/acme/images", data={"csrf_token": csrf_of(page.text)}).status_code == 403
    r = ada.post("/a/acme/images", data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 303 and r.headers["location"].endswith("/account#images")
    page = ada.get("/a/acme/account").text
    assert 'data-image="1"' in page and "pending" in page and "eu-west-1" in page

def test_account_page_sets_the_buckets_clusters_may_read(site):
    admin = client_for(site, "ada")
    page = admin.get("/a/acme/account")
    assert 'id="s3-read-form"' in page.text and "none (public-read data" in page.text
    r = admin.post("/a/acme/backend/s3-read", data={"csrf_token": csrf_of(page.text),
                                                    "s3_read": "acme-data\nacme-logs"})
    assert r.status_code == 303, r.text
    page = admin.get("/a/acme/account")
    assert "<code>acme-data</code>, <code>acme-logs</code>" in page.text
    r = admin.post("/a/acme/backend/s3-read", data={"csrf_token": csrf_of(page.text),
                                                    "s3_read": "s3://Not_A_Bucket"})
    assert r.status_code == 400 and "is not an S3 bucket name" in r.text
    member = client_for(site, "mo")
    page = member.get("/a/acme/account")
    assert 'id="s3-read-form"' not in page.text
    r = member.post("/a/acme/backend/s3-read", data={"csrf_token": csrf_of(page.text),
                                                     "s3_read": "x-bucket"})
    assert r.status_code == 403
