"""Scale figures (issue 11), one JSON line per result, each with a "case" key.

Case "launch" (hollow instances, bench/scale_hollow.py): a cluster of N workers (`--workers`,
default 10,100,1000) from the create request to every worker registered, and the control
plane's AWS calls meanwhile. Case "idle" (hollow): `--clusters` running clusters (default 100)
left alone for `--seconds` (default 120), AWS calls per cluster per minute.
Case "api": a control
plane whose database already holds 1000 clusters (900 finished ones seeded, then 100 created
concurrently with retries while 50 clients list), list latency and create errors.

    .venv/bin/python bench/scale.py [--json] [--case launch|idle|api|all] [--workers 10,100,1000]
        [--clusters 100] [--seconds 120] [--store sqlite|postgresql]

The api case starts a dedicated `overcast server` on loopback (temporary OVERCAST_HOME; AWS
endpoint a closed loopback port, so nothing boots); launch and idle start
`overcast local-cloud --hollow` and a server, and play every instance's agent in this process
(overcast/localcloud/hollowagents.py). Everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
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


def run_case(case: str, store: str, args: argparse.Namespace) -> Iterator[dict]:
    from bench.scale_hollow import idle_case, launch_case

    if case == "api":
        yield api_case(store, args.list_interval)
    elif case == "idle":
        yield idle_case(store, clusters=args.clusters, seconds=args.seconds)
    else:
        yield from launch_case(store, args.workers)


CASES = ("launch", "idle", "api")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", choices=(*CASES, "all"), action="append")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), action="append",
                        help="the control plane's database (default sqlite)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line "
                        "(the only output format; accepted for the documented command)")
    parser.add_argument("--workers", default="10,100,1000",
                        type=lambda s: [int(n) for n in s.split(",") if n],
                        help="launch case: cluster sizes, comma-separated")
    parser.add_argument("--clusters", type=int, default=100, help="idle case: running clusters")
    parser.add_argument("--seconds", type=float, default=120.0, help="idle case: window")
    parser.add_argument("--list-interval", type=float, default=0.0, help="api case: each "
                        "lister's pause between lists (default none: back to back)")
    args = parser.parse_args()
    cases = args.case or ["all"]
    for case in CASES if "all" in cases else cases:
        for store in args.store or ["sqlite"]:
            for result in run_case(case, store, args):
                print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
