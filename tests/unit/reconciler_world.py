"""A control plane (real app, real database, real Reconciler) over the fake provider, with a
controllable clock and agents simulated the way the agent routes record them."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi.testclient import TestClient
from sqlalchemy import select

from overcast import clock
from overcast.reconciler.loop import Reconciler
from overcast.store.db import Database
from overcast.store.models import Backend, Cluster, Notification, utcnow
from tests.unit.fake_provider import FakeProvider

LIVE = ("requested", "launched", "booting", "ready")
ACTIVE = ("pending", "starting", "running", "stopping")
PASS_SECONDS = 5.0  # the clock moves this much per pass


@dataclass
class World:
    db: Database
    api: TestClient
    headers: dict[str, str]
    slug: str
    fake: FakeProvider
    reconciler: Reconciler

    # --- the user's side ----------------------------------------------------------------------
    def create(self, name: str, n_workers: int = 1) -> int:
        r = self.api.post(f"/api/v1/accounts/{self.slug}/clusters", headers=self.headers,
                          json={"name": name, "n_workers": n_workers})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def scale(self, name: str, n: int) -> None:
        r = self.api.post(f"/api/v1/accounts/{self.slug}/clusters/{name}/scale",
                          headers=self.headers, json={"n_workers": n})
        assert r.status_code == 200, r.text

    def delete(self, name: str) -> None:
        r = self.api.delete(f"/api/v1/accounts/{self.slug}/clusters/{name}",
                            headers=self.headers)
        assert r.status_code == 202, r.text

    # --- the passing of time ----------------------------------------------------------------
    def run(self, seconds: float, pass_seconds: float = PASS_SECONDS) -> None:
        """Agents report, the reconciler passes, the clock moves; for `seconds` of clock."""
        for _ in range(max(1, int(seconds / pass_seconds))):
            self.agents_report()
            self.reconciler.run_pass()
            self.reconciler.backends.run_pass(self.db)
            self.reconciler.sweeper.maybe_sweep()
            clock.advance(pass_seconds)

    def settle(self, limit: float = 900.0) -> None:
        """Run until every cluster and backend is at rest (or `limit` seconds of clock)."""
        spent = 0.0
        while spent < limit and not self.at_rest():
            self.run(PASS_SECONDS)
            spent += PASS_SECONDS
        self.run(60)  # a sweep interval and a bit more

    def at_rest(self) -> bool:
        with self.db.session() as s:
            for c in s.scalars(select(Cluster)):
                if c.state in ("pending", "starting", "stopping"):
                    return False
                if c.desired_state == "stopped" and c.state == "running":
                    return False
                if c.state == "running" and sum(
                        i.role == "worker" and i.state == "ready"
                        for i in c.instances) != c.n_workers:
                    return False
            if not all(b.state in ("ready", "error") for b in s.scalars(select(Backend))):
                return False
        return not self.orphans()

    silent: frozenset[str] = frozenset()  # VMs whose heartbeats do not arrive
    scheduler_sees: int | None = None  # workers the scheduler reports (None: the ready ones)

    def agents_report(self) -> None:
        """What each running VM's agent does: ready once, then heartbeats (like agent.py)."""
        live = self.fake.live() - self.silent
        with self.db.session() as s:
            for c in s.scalars(select(Cluster).where(Cluster.state.in_(ACTIVE))):
                ready = 0
                for i in c.instances:
                    if i.aws_id not in live or i.state not in LIVE:
                        continue
                    if i.state != "ready":
                        i.reported_state = "ready"
                        i.address = f"tls://10.0.0.{i.id}:8786"
                    i.last_heartbeat = utcnow()
                    if i.role == "scheduler":
                        c.scheduler_address = i.address
                    else:
                        ready += i.state == "ready"
                seen = ready + sum(i.aws_id in self.silent and i.state == "ready"
                                   for i in c.instances if i.role == "worker")
                if self.scheduler_sees is not None:
                    seen = self.scheduler_sees
                c.activity = {"workers": seen, "tasks": 1, "clients": 1, "idle_seconds": 0}
            s.commit()

    # --- what the user and the invariants see ------------------------------------------------
    def cluster(self, cluster_id: int) -> dict:
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id)
            return {"state": c.state, "reason": c.reason, "n_workers": c.n_workers,
                    "ready": sum(i.state == "ready" for i in c.instances),
                    "ids": sorted(i.aws_id for i in c.instances
                                  if i.aws_id and i.state in LIVE)}

    def notifications(self, cluster_id: int | None = None) -> list[Notification]:
        with self.db.session() as s:
            q = select(Notification).order_by(Notification.id)
            if cluster_id is not None:
                q = q.where(Notification.cluster_id == cluster_id)
            rows = list(s.scalars(q))
            s.expunge_all()
            return rows

    def orphans(self) -> set[str]:
        """Instances the cloud runs that no unfinished cluster's live row knows of."""
        with self.db.session() as s:
            known = {i.aws_id for c in s.scalars(select(Cluster).where(
                Cluster.state.in_(ACTIVE))) for i in c.instances if i.state in LIVE}
        return self.fake.live() - known


def _built_images(db: Database, slug: str) -> None:
    """The overcast VM image, already built (hosted and in the account's own AWS): clusters
    boot only from it, and these tests are about what happens after."""
    import overcast
    from overcast import tags
    from overcast.store.models import Account, Image

    with db.session() as s:
        account = s.scalar(select(Account).where(Account.slug == slug))
        for scope in (tags.OPERATOR, slug):
            for region in ("us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1"):
                s.add(Image(account_id=account.id, scope=scope, region=region,
                            version=overcast.__version__, state="available", aws_id="ami"))
        s.commit()


def make_world(tmp_path, monkeypatch) -> World:
    from overcast.server.app import create_app
    from overcast.server.bootstrap import ensure_first_user

    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    for name in ("OVERCAST_START_TIMEOUT", "OVERCAST_BOOT_TIMEOUT",
                 "OVERCAST_HEARTBEAT_TIMEOUT", "OVERCAST_CLOCK_OFFSET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(clock, "_offset", 0.0)
    db = Database(f"sqlite:///{tmp_path / 'overcast.db'}")
    slug, token = ensure_first_user("alice", db)
    _built_images(db, slug)
    fake = FakeProvider()
    reconciler = Reconciler(db, "http://127.0.0.1:9", provider=fake, step_wait=None)
    api = TestClient(create_app(db, run_reconciler=False))
    return World(db, api, {"Authorization": f"Bearer {token}"}, slug, fake, reconciler)
