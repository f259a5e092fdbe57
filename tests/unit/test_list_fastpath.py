"""The cluster list's fast path (overcast.server.listcache): a revoked token is refused, a user
gets only their accounts' clusters, memory is never older than its bound, and a write that
lands while a snapshot is being read is not lost."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from anyio import to_thread

from overcast.server import clusterlists, tokencache
from overcast.server.clusterlists import ClusterLists
from overcast.store.models import ApiToken, Cluster

pytestmark = pytest.mark.timeout(60)


def url(api) -> str:
    return f"/api/v1/accounts/{api.slug}/clusters"


def names(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [c["name"] for c in response.json()]


def test_revoked_here_is_refused_at_once(api):
    assert names(api.get(url(api), headers=api.alice)) == []  # the token is cached now
    token_id = api.get("/api/v1/tokens", headers=api.alice).json()[0]["id"]
    assert api.delete(f"/api/v1/tokens/{token_id}", headers=api.alice).status_code == 204
    assert api.get(url(api), headers=api.alice).status_code == 401


def test_revoked_elsewhere_is_refused_within_max_age(api, monkeypatch):
    monkeypatch.setattr(tokencache, "FRESH", 0.2)
    monkeypatch.setattr(tokencache, "MAX_AGE", 0.4)
    assert names(api.get(url(api), headers=api.alice)) == []
    with api.db.session() as session:  # as another replica (or the CLI) would
        session.query(ApiToken).update({"revoked": True})
    time.sleep(0.45)
    assert api.get(url(api), headers=api.alice).status_code == 401


def test_only_members_get_an_accounts_list(api):
    team = api.post("/api/v1/teams", headers=api.alice, json={"name": "lab"}).json()["slug"]
    team_url = f"/api/v1/accounts/{team}/clusters"
    assert api.post(team_url, headers=api.alice, json={"name": "shared"}).status_code == 201
    assert api.post(url(api), headers=api.alice, json={"name": "mine"}).status_code == 201
    assert names(api.get(team_url, headers=api.alice)) == ["shared"]  # cached for alice
    assert names(api.get(url(api), headers=api.alice)) == ["mine"]
    assert api.get(team_url, headers=api.bob).status_code == 404
    assert names(api.get("/api/v1/accounts/bob/clusters", headers=api.bob)) == []
    # Added as a member (a write here): bob sees the team's clusters at his next list.
    r = api.post(f"/api/v1/accounts/{team}/members", headers=api.alice,
                 json={"username": "bob"})
    assert r.status_code == 201, r.text
    assert names(api.get(team_url, headers=api.bob)) == ["shared"]
    assert api.get(url(api), headers=api.bob).status_code == 404  # alice's own: still not
    assert api.delete(f"/api/v1/accounts/{team}/members/bob",
                      headers=api.alice).status_code == 204
    assert api.get(team_url, headers=api.bob).status_code == 404


def test_own_writes_show_at_once_and_others_within_ttl(api, monkeypatch):
    monkeypatch.setattr(clusterlists, "TTL", 0.3)
    for name in ("a", "b"):
        api.post(url(api), headers=api.alice, json={"name": name})
    assert names(api.get(url(api), headers=api.alice)) == ["b", "a"]
    api.delete(f"{url(api)}/a", headers=api.alice)
    [a] = [c for c in api.get(url(api), headers=api.alice).json() if c["name"] == "a"]
    assert a["desired_state"] == "stopped"  # the stop request shows in the next list
    with api.db.session() as session:  # the reconciler finishes it: no API write here
        session.query(Cluster).filter_by(name="a").one().state = "stopped"
    time.sleep(0.35)
    assert names(api.get(url(api), headers=api.alice)) == ["b"]


def test_fast_path_answers_like_the_route(api):
    for n in range(3):
        api.post(url(api), headers=api.alice, json={"name": f"c{n}", "n_workers": n})
    fast = api.get(url(api) + "?limit=2", headers=api.alice)
    # `after` is not served from memory: the route itself answers this one.
    route = api.get(url(api) + "?limit=2&after=2147483647", headers=api.alice)
    assert fast.content == route.content and fast.json()[0]["name"] == "c2"
    assert fast.headers["x-next-after"] == route.headers["x-next-after"]
    assert fast.headers["content-type"] == route.headers["content-type"]
    # What the route refuses is still refused (not served from memory).
    assert api.get(url(api) + "?limit=0", headers=api.alice).status_code == 422
    assert api.get(url(api), headers={"Authorization": "Bearer nope"}).status_code == 401


def test_a_write_during_a_rebuild_is_kept():
    """A create patched in while a rebuild reads (which may not see it) is in the result."""
    reading, release = threading.Event(), threading.Event()

    def load(account_id: int) -> list[tuple[int, bytes]]:
        reading.set()
        release.wait(10)
        return [(1, b'{"id":1}')]  # read before cluster 2's commit

    async def scenario() -> bytes:
        lists = ClusterLists(load, to_thread.run_sync)
        waiting = asyncio.ensure_future(lists.snapshot(7))
        await to_thread.run_sync(reading.wait, 10)
        lists.changed(7, 2, b'{"id":2}')  # committed meanwhile, in a route's thread
        lists.changed(8, 3, b'{"id":3}')  # another account's: not this one's business
        release.set()
        snap = await waiting
        assert (await lists.snapshot(7)) is snap  # kept, and served from memory
        return snap.page(1000)[0]

    assert asyncio.run(scenario()) == b'[{"id":2},{"id":1}]'


def test_an_invalidation_during_a_rebuild_is_not_served_later():
    calls = []

    def load(account_id: int) -> list[tuple[int, bytes]]:
        calls.append(account_id)
        if len(calls) == 1:
            lists.invalidate()  # e.g. a member removed while this read ran
        return [(len(calls), b"{}")]

    async def scenario() -> None:
        first = await lists.snapshot(1)  # usable by who asked before the invalidation
        assert first is not None and len(calls) == 1
        second = await lists.snapshot(1)  # a later request gets a fresh read
        assert second is not first and len(calls) == 2

    lists = ClusterLists(load, to_thread.run_sync)
    asyncio.run(scenario())


def test_more_than_a_page_goes_to_the_route_without_rereading():
    calls = []

    def load(account_id: int) -> None:
        calls.append(account_id)
        return None  # more active clusters than one page

    async def scenario() -> None:
        lists = ClusterLists(load, to_thread.run_sync)
        assert await lists.snapshot(1) is None and await lists.snapshot(1) is None

    asyncio.run(scenario())
    assert calls == [1]  # within TTL, known to be too many: no second read
