"""Scale figures, one JSON line per case (issue 11 adds more cases). Case "api": a control
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


def api_case(store: str) -> dict:
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
            r = asyncio.run(run_load(server, creates=CREATES, duplicates=0, listers=50))
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
            "health_max_ms": round(1000 * max(r.health_seconds), 1)}


CASES = {"api": api_case}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", choices=sorted(CASES), action="append")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), action="append",
                        help="the control plane's database (api case; default sqlite)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line "
                        "(the only output format; accepted for the documented command)")
    args = parser.parse_args()
    for case in args.case or sorted(CASES):
        for store in args.store or ["sqlite"]:
            print(json.dumps(CASES[case](store)), flush=True)


if __name__ == "__main__":
    main()
