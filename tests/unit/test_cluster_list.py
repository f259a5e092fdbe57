"""Listing clusters: active ones by default, finished on request, pages, and the short-lived
list cache never hiding the caller's own writes."""

from __future__ import annotations

import time

import pytest

from overcast.server import clusterlists
from overcast.store.models import Cluster

pytestmark = pytest.mark.timeout(60)


def names(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [c["name"] for c in response.json()]


def finish(api, name: str) -> None:
    with api.db.session() as session:
        session.query(Cluster).filter_by(name=name).one().state = "stopped"


def test_active_by_default_all_on_request(api):
    url = f"/api/v1/accounts/{api.slug}/clusters"
    for name in ("a", "b", "c"):
        assert api.post(url, headers=api.alice, json={"name": name}).status_code == 201
    finish(api, "b")
    api.delete(f"{url}/c", headers=api.alice)  # a write: the cached list is stale now
    assert names(api.get(url, headers=api.alice)) == ["c", "a"]
    assert names(api.get(url + "?state=all", headers=api.alice)) == ["c", "b", "a"]
    assert api.get(url + "?state=some", headers=api.alice).status_code == 422


def test_pages_follow_x_next_after(api):
    url = f"/api/v1/accounts/{api.slug}/clusters"
    for n in range(5):
        api.post(url, headers=api.alice, json={"name": f"p{n}"})
    first = api.get(url + "?limit=2", headers=api.alice)
    assert names(first) == ["p4", "p3"]
    after = first.headers["x-next-after"]
    second = api.get(f"{url}?limit=2&after={after}", headers=api.alice)
    assert names(second) == ["p2", "p1"]
    last = api.get(f"{url}?limit=2&after={second.headers['x-next-after']}", headers=api.alice)
    assert names(last) == ["p0"] and "x-next-after" not in last.headers
    assert api.get(url + "?limit=0", headers=api.alice).status_code == 422


def test_cache_shows_own_writes_and_expires(api, monkeypatch):
    monkeypatch.setattr(clusterlists, "TTL", 0.3)
    url = f"/api/v1/accounts/{api.slug}/clusters"
    assert names(api.get(url, headers=api.alice)) == []
    api.post(url, headers=api.alice, json={"name": "x"})
    assert names(api.get(url, headers=api.alice)) == ["x"]  # the create invalidated it
    finish(api, "x")  # as the reconciler would: no API write in this process
    assert names(api.get(url, headers=api.alice)) == ["x"]  # cached, within TTL
    time.sleep(0.35)
    assert names(api.get(url, headers=api.alice)) == []
    # Another token never gets this token's cached answer.
    assert api.get(url, headers=api.bob).status_code == 404  # not a member: not found
