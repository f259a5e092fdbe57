"""Scale figures, one JSON line per case. Case "idle": running clusters left alone on the local
cloud, the control plane's AWS calls per cluster per minute (`--clusters`, `--seconds`).
Case "api": a control
plane whose database already holds 1000 clusters (900 finished ones seeded, then 100 created
concurrently with retries while 50 clients list), list latency and create errors.

    .venv/bin/python bench/scale.py [--json] [--case api] [--store sqlite|postgresql]

Starts a dedicated `overcast server` on loopback (temporary OVERCAST_HOME; AWS endpoint a closed
loopback port, so nothing boots) and stops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SEEDED = 900
CREATES = 100


def seed_finished_clusters(home: Path, slug: str, n: int, database_url: str) -> None:
    """`n` stopped clusters, as a long-lived control plane's history would hold."""
    os.environ["OVERCAST_HOME"] = str(home)  # the crypto key lives there
    from overcast import crypto
    from overcast.store.db import Database
    from overcast.store.models import Account, Cluster

    db = Database(database_url)
    secret = crypto.encrypt("x" * 40)
    with db.session() as session:
        account = session.query(Account).filter_by(slug=slug).one()
        session.add_all(Cluster(account_id=account.id, name=f"old-{i}", options={},
                                region="us-east-1", n_workers=1, state="stopped",
                                token_hash="0" * 64, token_encrypted=secret,
                                tls_encrypted=secret) for i in range(n))
    db.engine.dispose()


def api_case(store: str, list_interval: float = 0.0) -> dict:
    """50 listers back to back (or each pausing `list_interval` s, like pollers) while 100
    creates run; the listers speak HTTP themselves (tests/e2e/apiload.py: _raw_lister), so
    the latency is the server's, not this one process's queue of 150 httpx clients."""
    import httpx

    from tests.e2e.apiload import ApiServer, run_load

    with tempfile.TemporaryDirectory(prefix="overcast-scale-") as tmp:
        home = Path(tmp)
        pg = server = None
        if store == "postgresql":  # a throwaway server on loopback (tests/pgserver.py)
            from tests.pgserver import PostgresServer
            pg = PostgresServer().start()
        try:
            url = pg.create_database("scale") if pg else None
            server = ApiServer(home, dict(os.environ), url)
            server.start()
            seed_finished_clusters(home, server.slug, SEEDED, server.database_url)
            # One list first, as from a dashboard already polling: the steady state is timed,
            # not the first connection to the database.
            httpx.get(f"{server.url}/api/v1/accounts/{server.slug}/clusters", timeout=30,
                      headers={"Authorization": f"Bearer {server.token}"}).raise_for_status()
            r = asyncio.run(run_load(server, creates=CREATES, duplicates=0, listers=50,
                                     list_interval=list_interval, raw_listers=True))
            for line in r.create_errors[:5]:
                print("create error:", line, file=sys.stderr)
        finally:
            if server:
                server.stop()
            if pg:
                pg.stop()
    return {"case": "api", "store": store, "clusters_in_db": SEEDED + len(r.created),
            "list_p99_ms": round(1000 * r.p99(r.list_seconds), 1),
            "concurrent_creates": CREATES,
            "create_errors": len(r.create_errors) + r.server_errors,
            "health_max_ms": round(1000 * max(r.health_seconds), 1),
            "list_p50_ms": round(1000 * statistics.median(r.list_seconds), 1),
            "lists_per_second": round(len(r.list_seconds) / r.seconds),
            "list_interval_s": list_interval, "load_average": os.getloadavg()[0]}


def idle_case(store: str, clusters: int = 10, seconds: float = 120.0) -> dict:
    """`clusters` running clusters (a scheduler each) on the local cloud, left alone for
    `seconds`: the control plane's own AWS-call record (OVERCAST_RECORD_AWS_ACTIONS) counted."""
    import time

    import httpx

    from overcast.reconciler.contexts import RECORD_ENV
    from overcast.server.bootstrap import ensure_first_user
    from overcast.store.db import Database
    from tests.e2e.stack import Stack

    with tempfile.TemporaryDirectory(prefix="overcast-idle-") as tmp:
        home, record = Path(tmp), Path(tmp) / "aws-calls.jsonl"
        os.environ["OVERCAST_HOME"] = str(home)
        stack = Stack(home)
        stack.server_env[RECORD_ENV] = str(record)
        try:
            stack.start_cloud()
            stack.start_server()
            slug, token = ensure_first_user("idle-user", Database(stack.database_url))
            api = httpx.Client(base_url=f"{stack.url}/api/v1/accounts/{slug}",
                               headers={"Authorization": f"Bearer {token}"}, timeout=30)
            for n in range(clusters):
                api.post("/clusters", json={"name": f"idle{n}", "n_workers": 0})
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                states = [c["state"] for c in api.get("/clusters").json()]
                if states.count("running") == clusters or "error" in states:
                    break
                time.sleep(1)
            running = states.count("running")
            time.sleep(5)  # the last starts' own calls out of the window
            start = time.time()
            time.sleep(seconds)
            calls = [json.loads(line) for line in record.read_text().splitlines()]
            window = [c for c in calls if start <= c["t"] < start + seconds]
        finally:
            stack.stop()
    actions: dict[str, int] = {}
    for call in window:
        actions[call["action"]] = actions.get(call["action"], 0) + 1
    return {"case": "idle", "store": store, "clusters": running, "seconds": seconds,
            "aws_calls": len(window), "actions": actions,
            "aws_calls_per_cluster_minute": round(len(window) / max(running, 1)
                                                  / (seconds / 60), 2)}


CASES = {"api": api_case, "idle": idle_case}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", choices=sorted(CASES), action="append")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), action="append",
                        help="the control plane's database (api case; default sqlite)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line "
                        "(the only output format; accepted for the documented command)")
    parser.add_argument("--clusters", type=int, default=10, help="idle case: running clusters")
    parser.add_argument("--seconds", type=float, default=120.0, help="idle case: window")
    parser.add_argument("--list-interval", type=float, default=0.0, help="api case: each "
                        "lister's pause between lists (default none: back to back)")
    args = parser.parse_args()
    for case in args.case or sorted(CASES):
        for store in args.store or ["sqlite"]:
            extra = {"clusters": args.clusters, "seconds": args.seconds} if case == "idle" \
                else {"list_interval": args.list_interval}
            print(json.dumps(CASES[case](store, **extra)), flush=True)


if __name__ == "__main__":
    main()
