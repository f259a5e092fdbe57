"""Time from `Cluster(n_workers=4)` to 4 workers connected: overcast on the local cloud vs
`distributed.LocalCluster(n_workers=4)`, interleaved in the same run.

    .venv/bin/python bench/start_latency.py [--rounds 5] [--workers 4]

Starts its own local cloud and control plane (free ports, a temporary OVERCAST_HOME) and stops
them at the end. Prints a markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dask
from distributed import Client, LocalCluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import overcast
from overcast.server.bootstrap import ensure_first_user
from overcast.store.db import Database
from tests.e2e.stack import Stack


def time_local(n: int) -> float:
    start = time.perf_counter()
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        client.wait_for_workers(n)
        elapsed = time.perf_counter() - start
    return elapsed


def time_overcast(n: int, i: int) -> float:
    start = time.perf_counter()
    with overcast.Cluster(name=f"bench-{i}", n_workers=n, progress="none") as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(n)
        elapsed = time.perf_counter() - start
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="overcast-bench-"))
    os.environ["OVERCAST_HOME"] = str(home)
    stack = Stack(home)
    try:
        stack.start_cloud()
        stack.start_server()
        slug, token = ensure_first_user("bench", Database(f"sqlite:///{home / 'overcast.db'}"))
        os.environ["AWS_ENDPOINT_URL"] = stack.endpoint
        local, ours = [], []
        with dask.config.set({"overcast.server": stack.url, "overcast.token": token,
                              "overcast.account": slug}):
            time_overcast(args.workers, -1)  # warm-up: the account's network and role
            time_local(args.workers)
            for i in range(args.rounds):
                local.append(time_local(args.workers))
                ours.append(time_overcast(args.workers, i))
                print(f"round {i}: LocalCluster {local[-1]:.2f} s, overcast {ours[-1]:.2f} s",
                      file=sys.stderr)
    finally:
        stack.stop()
    lm, om = statistics.median(local), statistics.median(ours)
    print("| workers | rounds | LocalCluster median | overcast median | ratio |")
    print("|---|---|---|---|---|")
    print(f"| {args.workers} | {args.rounds} | {lm:.2f} s | {om:.2f} s | {om / lm:.2f}x |")


if __name__ == "__main__":
    main()
