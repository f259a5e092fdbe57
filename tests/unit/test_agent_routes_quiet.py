"""The agent routes at scale: identity documents prove which instance calls, the scheduler
address is a long-poll that holds no slot, heartbeats are written in batches."""

from __future__ import annotations

import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from overcast import crypto
from overcast.agent.control import identity_headers
from overcast.localcloud.identity import IdentitySigner
from overcast.server.app import create_app
from overcast.server.bootstrap import ensure_first_user
from overcast.store.db import Database
from overcast.store.models import Cluster, Instance
from tests.unit.identity_docs import Identities

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def api(tmp_path, monkeypatch):
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    monkeypatch.setenv("OVERCAST_API_CONCURRENCY", "2")
    db = Database(f"sqlite:///{tmp_path / 'overcast.db'}")
    slug, token = ensure_first_user("alice", db)
    identities = Identities(tmp_path, monkeypatch)
    with TestClient(create_app(db, run_reconciler=False)) as client:
        client.db, client.slug, client.ids = db, slug, identities
        client.alice = {"Authorization": f"Bearer {token}"}
        created = client.post(f"/api/v1/accounts/{slug}/clusters", headers=client.alice,
                              json={"name": "c", "n_workers": 1}).json()
        with db.session() as s:
            cluster = s.get(Cluster, created["id"])
            cluster.aws_account_id = "123456789012"
            s.add(Instance(cluster_id=cluster.id, role="scheduler", aws_id="i-sched",
                           instance_type="m6i.large", state="booting"))
            s.add(Instance(cluster_id=cluster.id, role="worker", aws_id="i-work",
                           instance_type="m6i.large", state="ready"))
            client.cluster_id = cluster.id
            client.agent = {"Authorization": f"Bearer {crypto.decrypt(cluster.token_encrypted)}"}
        yield client


def route(api, aws_id: str, verb: str) -> str:
    return f"/api/v1/agent/clusters/{api.cluster_id}/instances/{aws_id}/{verb}"


def beat(api, aws_id: str, identity: dict[str, str], body: dict | None = None):
    return api.post(route(api, aws_id, "heartbeat"), headers={**api.agent, **identity},
                    json=body or {})


# --- identity -----------------------------------------------------------------------------

def test_a_signed_document_of_this_instance_is_accepted(api):
    assert beat(api, "i-work", api.ids.headers("i-work")).json() == {"action": "continue"}


@pytest.mark.parametrize("case", ["missing", "another instance's", "edited", "foreign key",
                                  "another region", "another account", "not base64"])
def test_forged_or_mismatched_documents_are_refused(api, case):
    ids = api.ids
    if case == "missing":
        headers, why = {}, "identity document"
    elif case == "another instance's":  # a VM of the cluster speaking for another
        headers, why = ids.headers("i-sched"), "not i-work's"
    elif case == "edited":  # the document changed after it was signed
        signed = ids.document("i-sched")
        headers = identity_headers(signed.replace("i-sched", "i-work"), ids.signer.sign(signed))
        why = "does not verify"
    elif case == "foreign key":  # signed by a key the control plane does not trust
        doc = ids.document("i-work")
        headers, why = identity_headers(doc, IdentitySigner().sign(doc)), "does not verify"
    elif case == "another region":
        headers, why = ids.headers("i-work", region="eu-west-1"), "region"
    elif case == "another account":
        headers, why = ids.headers("i-work", account="210987654321"), "another AWS account"
    else:
        headers = {**ids.headers("i-work"), "X-Overcast-Identity-Document": "%%%"}
        why = "base64"
    r = beat(api, "i-work", headers)
    assert r.status_code == 403, r.text
    assert why in r.json()["detail"]
    # The same refusal for the reports that change state.
    r = api.post(route(api, "i-work", "failed"), headers={**api.agent, **headers},
                 json={"reason": "x"})
    assert r.status_code == 403


def test_without_configured_certificates_nothing_is_accepted(api, monkeypatch):
    monkeypatch.delenv("OVERCAST_IDENTITY_CERTS")
    r = beat(api, "i-work", api.ids.headers("i-work"))
    assert r.status_code == 403 and "OVERCAST_IDENTITY_CERTS" in r.json()["detail"]


# --- the scheduler long-poll ------------------------------------------------------------------

def scheduler(api, wait: float | None = None):
    params = {"wait": wait} if wait is not None else {}
    return api.get(f"/api/v1/agent/clusters/{api.cluster_id}/scheduler", headers=api.agent,
                   params=params)


def test_long_poll_answers_when_the_scheduler_reports_and_holds_no_slot(api):
    answers: list[tuple[float, dict]] = []

    def poll():
        started = time.monotonic()
        r = scheduler(api, wait=20)
        answers.append((time.monotonic() - started, r.json()))

    # More waiters than the API has slots (2): requests still get through meanwhile.
    pollers = [threading.Thread(target=poll) for _ in range(4)]
    for t in pollers:
        t.start()
    time.sleep(0.5)
    started = time.monotonic()
    assert api.get("/api/v1/me", headers=api.alice).status_code == 200
    assert time.monotonic() - started < 2
    assert answers == []  # still waiting
    r = api.post(route(api, "i-sched", "ready"), headers={**api.agent,
                 **api.ids.headers("i-sched")}, json={"address": "tls://10.0.0.9:8786"})
    assert r.status_code == 200, r.text
    for t in pollers:
        t.join(10)
    assert len(answers) == 4
    assert all(a["address"] == "tls://10.0.0.9:8786" for _, a in answers)
    assert all(took < 5 for took, _ in answers)
    # Known already: answered at once.
    assert scheduler(api, wait=20).json()["address"] == "tls://10.0.0.9:8786"


def test_long_poll_times_out_and_sees_another_replicas_report(api):
    started = time.monotonic()
    assert scheduler(api, wait=0.5).json()["address"] is None
    assert 0.4 <= time.monotonic() - started < 3
    assert scheduler(api).json()["address"] is None  # no wait: at once

    def other_replica():  # the scheduler's report reached another server on the same DB
        time.sleep(0.3)
        with api.db.session() as s:
            s.get(Cluster, api.cluster_id).scheduler_address = "tls://10.0.0.7:8786"
    threading.Thread(target=other_replica).start()
    started = time.monotonic()
    assert scheduler(api, wait=20).json()["address"] == "tls://10.0.0.7:8786"
    assert time.monotonic() - started < 4
    assert scheduler(api, wait=61).status_code == 422


# --- heartbeats in batches ------------------------------------------------------------------

def test_heartbeats_are_written_in_batches(api):
    with api.db.session() as s:
        before = s.get(Instance, 2).last_heartbeat if s.get(Instance, 2) else None
    assert beat(api, "i-work", api.ids.headers("i-work")).status_code == 200
    assert beat(api, "i-sched", api.ids.headers("i-sched"),
                {"workers": 1, "tasks": 3, "clients": 0, "idle_seconds": 0}).status_code == 200

    def rows():
        with api.db.session() as s:
            work = s.query(Instance).filter_by(aws_id="i-work").one()
            cluster = s.get(Cluster, api.cluster_id)
            return work.last_heartbeat, dict(cluster.activity or {}), cluster.last_activity_at
    seen, activity, active_at = rows()
    assert seen == before and "workers" not in activity  # noted, not written yet
    assert api.app.state.heartbeats.flush() == 3  # two instances, one scheduler's activity
    seen, activity, active_at = rows()
    assert seen is not None and active_at is not None
    assert activity["workers"] == 1 and activity["tasks"] == 3
    assert "no_client_since" in activity and json.dumps(activity)
    assert api.app.state.heartbeats.flush() == 0  # nothing new


def test_workers_ready_reports_are_written_together_and_answered_once_committed(api):
    """Concurrent workers' reports: each answer comes after its row is written; reports that
    wait together share a transaction and one notification (server/readyreports.py)."""
    with api.db.session() as s:
        for n in range(6):
            s.add(Instance(cluster_id=api.cluster_id, role="worker", aws_id=f"i-w{n}",
                           instance_type="m6i.large", state="booting"))
    answers: dict[str, int] = {}

    def ready(aws_id: str) -> None:
        r = api.post(route(api, aws_id, "ready"),
                     headers={**api.agent, **api.ids.headers(aws_id)}, json={"address": f"tls://10.0.0.{len(aws_id)}:9000"})
        answers[aws_id] = r.status_code
        with api.db.session() as s:  # answered: recorded
            row = s.query(Instance).filter_by(aws_id=aws_id).one()
            assert row.reported_state == "ready" and row.address.startswith("tls://")

    threads = [threading.Thread(target=ready, args=(f"i-w{n}",)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert answers == {f"i-w{n}": 200 for n in range(6)}
    notes = api.get(f"/api/v1/accounts/{api.slug}/notifications", headers=api.alice).json()
    named = [n["message"] for n in notes if n["event_type"] == "worker-ready"]
    # Every worker is named once, in however many batches the reports fell into.
    assert sum(int(m.split()[0]) if m[0].isdigit() else 1 for m in named) == 6


def test_a_ready_report_whose_write_fails_is_an_error_the_agent_retries(api, monkeypatch):
    from overcast.server.readyreports import ReadyReports

    def fail(self, reports):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(ReadyReports, "_commit", fail)
    plain = TestClient(api.app, raise_server_exceptions=False)  # the HTTP answer, as sent
    r = plain.post(route(api, "i-work", "ready"),
                   headers={**api.agent, **api.ids.headers("i-work")},
                   json={"address": "tls://10.0.0.5:9000"})
    assert r.status_code == 500  # control.py retries 5xx


def test_a_known_clusters_bearer_is_checked_without_the_database(api, monkeypatch):
    """Once a cluster's token hash is known, a ready report with a wrong token is refused
    (404) and one with the right token accepted, neither reading the cluster for its bearer
    (server/clustertokens.py); a wrong token is refused before the body is looked at."""
    from overcast.server.api import agent

    headers = {**api.agent, **api.ids.headers("i-work")}
    body = {"address": "tls://10.0.0.5:9000"}
    assert api.post(route(api, "i-work", "ready"), headers=headers, json=body).status_code == 200
    reads = []
    monkeypatch.setattr(agent, "_bearer_in_db", lambda *a: reads.append(a))
    wrong = {**headers, "Authorization": "Bearer not-the-token"}
    r = api.post(route(api, "i-work", "ready"), headers=wrong, json={"address": 5})
    assert r.status_code == 404 and "No such cluster" in r.json()["detail"]
    assert api.post(route(api, "i-work", "ready"), headers=headers, json=body).status_code == 200
    assert reads == []  # both bearers checked against the known hash
