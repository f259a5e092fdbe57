"""The dask dashboard behind its credential: HTTPS with the cluster's CA, and a token in the link.

A real cluster on the local cloud; the dashboard is dialled as a user's browser would, trusting
only the cluster's CA (from the credentials endpoint) and checking that the certificate names
the scheduler's address.
"""

from __future__ import annotations

import ssl
import time
from urllib.parse import parse_qs, urlsplit

import dask
import httpx
import pytest

import overcast
from overcast import tags
from tests.e2e.helpers import environ

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
NAME = "dash"


def api(stack, path: str) -> dict | list:
    response = httpx.get(f"{stack.url}/api/v1/accounts/{stack.account}{path}",
                         headers={"Authorization": f"Bearer {stack.token}"}, timeout=10)
    response.raise_for_status()
    return response.json()


@pytest.fixture(scope="module")
def cluster(stack):
    with environ(AWS_ENDPOINT_URL=stack.endpoint), dask.config.set({
            "overcast.server": stack.url, "overcast.token": stack.token,
            "overcast.account": stack.account}):
        cluster = overcast.Cluster(name=NAME, n_workers=1)
        try:
            yield cluster
        finally:
            cluster.close()


@pytest.fixture(scope="module")
def cluster_ca(cluster, stack, tmp_path_factory) -> ssl.SSLContext:
    """An SSL context that trusts the cluster's CA and nothing else."""
    creds = api(stack, f"/clusters/{NAME}/credentials")
    return ssl.create_default_context(cadata=creds["ca_cert"])


def split(link: str) -> tuple[str, str]:
    """(link without its query, the token in it)."""
    parts = urlsplit(link)
    return parts._replace(query="").geturl(), parse_qs(parts.query)["token"][0]


def test_the_link_carries_the_credential_in_the_detail_only(cluster, stack):
    detail = api(stack, f"/clusters/{NAME}")
    assert detail["dashboard_link"].startswith("https://")
    assert cluster.dashboard_link == detail["dashboard_link"]
    bare, token = split(detail["dashboard_link"])
    assert bare.endswith(":8787/status") and len(token) >= 40
    listed = {c["name"]: c for c in api(stack, "/clusters")}[NAME]
    assert listed["dashboard_link"] == bare  # lists carry no credential
    assert token not in repr(cluster)  # repr() ends up in logs


def test_without_its_credential_the_dashboard_is_refused(cluster, cluster_ca):
    bare, token = split(cluster.dashboard_link)
    with httpx.Client(verify=cluster_ca, timeout=10) as http:
        for url in (bare, f"{bare}?token=not-{token}", bare.replace("/status", "/status/ws"),
                    bare.replace("/status", "/individual-task-stream"),
                    bare.replace("/status", "/health")):
            response = http.get(url)
            assert response.status_code == 403, url
            assert "needs its credential" in response.text
        bearer = http.get(bare, headers={"Authorization": "Bearer wrong"})
        assert bearer.status_code == 403


def test_with_its_credential_the_page_loads(cluster, cluster_ca):
    link = cluster.dashboard_link
    bare, _ = split(link)
    with httpx.Client(verify=cluster_ca, timeout=10) as http:
        page = http.get(link)
        # The token is traded for a cookie (Secure, HttpOnly) and dropped from the address.
        assert page.status_code == 302 and page.headers["location"] == "/status"
        cookie = page.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=lax" in cookie
        deadline = time.monotonic() + 60  # bokeh is attached just after the scheduler is ready
        while True:
            page = http.get(bare)
            if page.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert page.status_code == 200, page.text[:300]
        assert "Bokeh" in page.text and "/status/ws" not in str(page.url)
        # Other pages of the dashboard, by the cookie alone.
        tasks = http.get(bare.replace("/status", "/individual-task-stream"))
        assert tasks.status_code == 200


def test_it_is_https_signed_by_the_clusters_own_ca(cluster):
    bare, token = split(cluster.dashboard_link)
    with pytest.raises(httpx.ConnectError):  # the system's CAs do not vouch for it
        httpx.get(cluster.dashboard_link, timeout=10)
    with pytest.raises(httpx.HTTPError):  # no plain HTTP
        httpx.get(bare.replace("https://", "http://") + f"?token={token}", timeout=10)


def test_the_dashboard_port_stays_open_to_the_configured_cidr(cluster, stack, aws):
    ec2 = aws("ec2")
    info = api(stack, f"/clusters/{NAME}")
    groups = ec2.describe_security_groups(Filters=[
        {"Name": f"tag:{tags.CLUSTER}", "Values": [str(info["id"])]}])["SecurityGroups"]
    rules = [(p.get("FromPort"), r["CidrIp"]) for g in groups for p in g["IpPermissions"]
             for r in p.get("IpRanges", [])]
    assert (8787, "0.0.0.0/0") in rules  # the default firewall; a configured CIDR is kept


def test_the_token_is_never_logged_nor_notified(cluster, stack):
    _, token = split(cluster.dashboard_link)
    cluster.close()
    texts = [api(stack, "/notifications?limit=1000").__repr__(),
             repr(api(stack, f"/clusters/{NAME}/logs")),
             stack.server.log_path.read_text(errors="replace"),
             stack.cloud.log_path.read_text(errors="replace"),
             *(p.read_text(errors="replace") for p in (stack.home / "logs").rglob("*.log"))]
    for text in texts:
        assert token not in text
