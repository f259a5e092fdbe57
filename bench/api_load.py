"""The control plane under load: 50 clients listing clusters while 100 clusters are created
(20 of them sent twice at once), with the client's retries; /api/v1/health timed from its own
thread. Prints one JSON line.

    .venv/bin/python bench/api_load.py [--creates 100] [--listers 50] [--duplicates 20]

Starts a dedicated `overcast server` on loopback (a temporary OVERCAST_HOME; its AWS endpoint
is a closed loopback port, so no cluster boots) and stops it at the end.
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


def main() -> None:
    from tests.e2e.apiload import ApiServer, run_load

    parser = argparse.ArgumentParser()
    parser.add_argument("--creates", type=int, default=100)
    parser.add_argument("--duplicates", type=int, default=20)
    parser.add_argument("--listers", type=int, default=50)
    parser.add_argument("--database-url", default=None,
                        help="e.g. postgresql+psycopg://user@127.0.0.1:5432/db (an empty one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="overcast-bench-") as home:
        server = ApiServer(Path(home), dict(os.environ), args.database_url)
        try:
            server.start()
            r = asyncio.run(run_load(server, creates=args.creates, duplicates=args.duplicates,
                                     listers=args.listers))
        finally:
            server.stop()
    print(json.dumps({
        "case": "api_load", "database": (args.database_url or "sqlite").split(":")[0],
        "concurrent_creates": args.creates, "duplicates": args.duplicates,
        "listers": args.listers, "lists": len(r.list_seconds),
        "list_p50_ms": round(1000 * sorted(r.list_seconds)[len(r.list_seconds) // 2], 1),
        "list_p99_ms": round(1000 * r.p99(r.list_seconds), 1),
        "health_max_ms": round(1000 * max(r.health_seconds), 1),
        "health_p99_ms": round(1000 * r.p99(r.health_seconds), 1),
        "server_errors": r.server_errors, "create_errors": len(r.create_errors),
        "clusters": len(r.created), "seconds": round(r.seconds, 1),
        "statuses": dict(sorted(r.statuses.items())),
    }))


if __name__ == "__main__":
    main()
