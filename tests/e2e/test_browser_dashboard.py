"""The dashboard in real headless Chromium, against the real control plane and local cloud.

One story, in order (each test builds on the previous): sign in; make a team; run the cloud
backend wizard into a fresh local-cloud AWS account; watch its resources appear live until
ready; start a cluster from Python with account= the team; see it on the Clusters page and
its own page; a member cannot change the backend; reset to the default; `overcast login`'s
browser hand-off. Every step saves a screenshot under test-artifacts/browser/.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import dask
import httpx
import pytest
import yaml

from overcast.server.auth import issue_token
from overcast.server.bootstrap import add_member, create_team, create_user
from overcast.store.db import Database
from overcast.store.models import User

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
TEAM = "skyteam"
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300),
              pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                 reason="needs Debian's chromium (make installs it)")]
STATE: dict = {}
# The pages' CSP forbids eval, so waits use locators (expect), not wait_for_function strings.
expect = pytest.importorskip("playwright.sync_api").expect


@pytest.fixture(scope="module")
def site(stack):
    """Users in the stack's database: dana (admins the team) and milo (a member of it)."""
    db = Database(stack.database_url)
    with db.session() as s:
        dana = create_user(s, "dana", password="dana password")
        create_user(s, "milo", password="milo password")
        team = create_team(s, dana, "SkyTeam")
        add_member(s, team, "milo", "member")
        s.flush()
        stack.dana_token = issue_token(s, s.get(User, dana.id), name="browser-test")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return stack


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--disable-gpu", "--disable-quic", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(browser, site):
    context = browser.new_context(viewport={"width": 1280, "height": 860}, base_url=site.url)
    tab = context.new_page()
    tab.on("dialog", lambda dialog: dialog.accept())  # "Reset to default?" confirmation
    yield tab
    context.close()


def shot(tab, name: str) -> None:
    tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(tab, username: str) -> None:
    tab.goto("/login")
    tab.fill("#username", username)
    tab.fill("#password", f"{username} password")
    tab.click("#sign-in")


def test_01_sign_in(page, site):
    page.goto("/")
    assert "/login" in page.url
    page.fill("#username", "dana")
    page.fill("#password", "wrong password")
    page.click("#sign-in")
    assert page.locator(".error").inner_text() == "Wrong username or password."
    shot(page, "01-sign-in-refused")
    sign_in(page, "dana")
    page.wait_for_url("**/a/dana/clusters")
    assert page.locator("#username").inner_text() == "dana"
    cookie = next(c for c in page.context.cookies() if c["name"] == "overcast_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    shot(page, "02-signed-in-clusters")


def test_02_switch_to_the_team_and_open_the_account(page):
    page.select_option("#account-switcher", TEAM)
    page.wait_for_url(f"**/a/{TEAM}/clusters")
    page.click(".nav >> text=Account")
    page.wait_for_url(f"**/a/{TEAM}/account")
    assert "hosted account (default)" in page.inner_text("#backend-kind")
    page.click("#policy-setup summary")
    assert '"Statement"' in page.inner_text("#policy-setup pre")
    with page.expect_download() as download:
        page.click("#policy-ongoing summary")
        page.click("text=Download overcast-ongoing-policy.json")
    assert json.loads(Path(download.value.path()).read_text())["Statement"]
    shot(page, "03-team-account-hosted")


def test_03_wizard_into_a_new_aws_account(page, site):
    made = subprocess.run([sys.executable, "-m", "overcast.cli.main", "local-cloud",
                           "new-aws-account", "--json"], capture_output=True, text=True,
                          check=True, env={**os.environ, "OVERCAST_HOME": str(site.home)})
    acct = json.loads(made.stdout)
    STATE["secret"], STATE["key_id"] = acct["secret_access_key"], acct["access_key_id"]
    page.click("#edit-backend")
    page.wait_for_url(f"**/a/{TEAM}/backend/edit")
    assert page.is_visible("text=Select your cloud provider")
    shot(page, "04-wizard-provider")
    page.click("#wizard-next")
    page.select_option("#region", "us-east-1")
    page.check("#kind-aws")
    page.fill("#aws_access_key_id", acct["access_key_id"])
    page.fill("#aws_secret_access_key", acct["secret_access_key"])
    shot(page, "05-wizard-configure-aws")
    page.click("#wizard-next")
    page.check("#registry-ecr")
    shot(page, "06-wizard-registry")
    page.click("#wizard-next")
    review = page.inner_text("#review")
    assert "Launch in my AWS account" in review and acct["secret_access_key"] not in review
    assert acct["access_key_id"] not in review  # masked there too
    shot(page, "07-wizard-review")
    page.click("#wizard-submit")
    page.wait_for_url(f"**/a/{TEAM}/backend/progress")


def test_04_resources_appear_live_until_ready(page):
    rows = page.locator("#resources tbody tr:not(.empty)")
    rows.first.wait_for(timeout=60_000)
    shot(page, "08-provisioning-live")
    expect(page.locator("#backend-state")).to_have_text("ready", timeout=120_000)
    kinds = page.locator("#resources tbody tr td:nth-child(2)").all_inner_texts()
    assert {"vpc", "subnet-private", "iam-role", "log-group"} <= set(kinds), kinds
    shot(page, "09-backend-ready")
    page.goto(f"/a/{TEAM}/account")
    assert "your AWS account" in page.inner_text("#backend-kind")
    key = page.inner_text("#backend-key")
    assert key == "*" * 16 + STATE["key_id"][-4:]  # only the key id's own last 4
    assert STATE["secret"] not in page.content()
    shot(page, "10-account-own-aws")


def test_05_cluster_from_python_shows_on_the_clusters_page(page, site, browser, monkeypatch):
    import overcast

    page.goto(f"/a/{TEAM}/clusters")
    monkeypatch.setenv("AWS_ENDPOINT_URL", site.endpoint)
    with dask.config.set({"overcast.server": site.url, "overcast.token": site.dana_token,
                          "overcast.account": None}):
        cluster = overcast.Cluster(name="browser-demo", n_workers=1, account=TEAM)
        try:
            assert cluster.account == TEAM
            row = page.locator('#clusters tr[data-name="browser-demo"]')
            row.wait_for(timeout=30_000)  # arrived by server-sent events, no reload
            expect(row.locator(".state")).to_have_text("running", timeout=60_000)
            shot(page, "11-clusters-running")
            page.click("text=browser-demo")
            page.wait_for_url(f"**/a/{TEAM}/clusters/browser-demo")
            roles = page.locator("#instances tbody td:nth-child(2)").all_inner_texts()
            assert "scheduler" in roles and "worker" in roles
            link = page.locator("#dashboard a").get_attribute("href")
            assert link.startswith("https://") and "token=" in link
            open_dask_dashboard(browser, link)
            page.click("#logs summary")
            page.locator("#logs pre").first.wait_for(timeout=30_000)
            shot(page, "12-cluster-page")
        finally:
            cluster.close()
    expect(page.locator("#cluster-state")).to_have_text("stopped", timeout=60_000)
    shot(page, "13-cluster-stopped")


def open_dask_dashboard(browser, link: str) -> None:
    """The dask dashboard from the cluster page's link: HTTPS under the cluster's own CA (this
    browser does not know it), the token traded for a cookie, bokeh's websocket up by cookie."""
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280,
                                                                      "height": 860})
    tab = context.new_page()
    try:
        assert tab.goto(link.split("?")[0]).status == 403  # no credential, no dashboard
        deadline = time.monotonic() + 60  # bokeh is attached just after the scheduler is ready
        while tab.goto(link).status != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "token=" not in tab.url
        # Listen before the reload: bokeh's first frames can arrive before a later
        # wait_for_event is attached, and an idle dashboard may send no more after them.
        frames: list = []
        tab.on("websocket",
               lambda ws: ws.on("framereceived", lambda payload: frames.append(payload)))
        tab.reload()
        deadline = time.monotonic() + 60
        while not frames and time.monotonic() < deadline:
            tab.wait_for_timeout(200)  # also lets Playwright deliver the events
        assert frames, "bokeh's websocket received no frame"
        tab.locator("canvas").first.wait_for(timeout=30_000)  # plots drawn from that session
        shot(tab, "12b-dask-dashboard")
    finally:
        context.close()


def test_06_member_cannot_change_the_backend(browser, site):
    context = browser.new_context(base_url=site.url)
    tab = context.new_page()
    sign_in(tab, "milo")
    tab.wait_for_url("**/a/milo/clusters")
    tab.goto(f"/a/{TEAM}/account")
    assert tab.locator("#edit-backend").count() == 0
    assert "Only admins of skyteam" in tab.inner_text("#backend-card")
    response = tab.goto(f"/a/{TEAM}/backend/edit")
    assert response.status == 403
    shot(tab, "14-member-refused")
    api = httpx.put(f"{site.url}/api/v1/accounts/{TEAM}/backend", json={"backend": "hosted"},
                    headers={"Authorization": f"Bearer {member_token(site)}"})
    assert api.status_code == 403
    assert tab.goto(f"/a/{site.account}/clusters").status == 404  # someone else's account
    context.close()


def member_token(site) -> str:
    from sqlalchemy import select
    db = Database(site.database_url)
    with db.session() as s:
        return issue_token(s, s.scalar(select(User).where(User.username == "milo")))


def test_07_reset_to_default(page):
    page.goto(f"/a/{TEAM}/account")
    page.click("#reset-backend")
    page.wait_for_url(f"**/a/{TEAM}/account")
    assert "hosted account (default)" in page.inner_text("#backend-kind")
    assert page.locator("#reset-backend").count() == 0
    shot(page, "15-reset-to-default")


def test_08_cli_login_hands_a_token_to_the_loopback(page, site, tmp_path):
    env = {**os.environ, "DASK_CONFIG": str(tmp_path / "dask"), "OVERCAST_HOME": str(site.home)}
    proc = subprocess.Popen([sys.executable, "-m", "overcast.cli.main", "login", "--no-browser",
                             "--server", site.url], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        link = ""
        deadline = time.monotonic() + 30
        while not link and time.monotonic() < deadline:
            line = proc.stderr.readline()
            link = (re.search(r"(http://\S+/login\?cli=\d+&state=\S+)", line) or [""])[0]
        assert link, "overcast login printed no link"
        page.goto(link)
        shot(page, "16-cli-approve")
        page.click("#approve-cli")
        page.wait_for_selector("text=You can close this window", timeout=15_000)
        shot(page, "17-cli-signed-in")
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    config = yaml.safe_load((tmp_path / "dask" / "overcast.yaml").read_text())["overcast"]
    assert config["server"] == site.url and config["account"] == "dana"
    me = httpx.get(f"{site.url}/api/v1/me", headers={"Authorization": f"Bearer {config['token']}"})
    assert me.json()["username"] == "dana"
