"""Time from `Cluster(n_workers=4)` to 4 workers connected: overcast on the local cloud vs
`distributed.LocalCluster(n_workers=4)`, interleaved in the same run.

    .venv/bin/python bench/start_latency.py [--rounds 5] [--workers 4]

Starts its own local cloud and control plane (free ports, a temporary OVERCAST_HOME) and stops
them at the end. Prints a markdown table for BENCHMARKS.md, then where overcast's time went
(medians over the rounds, from the control plane's notifications). Instances are containers of
the overcast VM image; the warm-up cluster waits for its first build (timed separately).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dask
from distributed import Client, LocalCluster

# LocalCluster's worker processes are spawned and import this file again (as __mp_main__): the
# control plane's and the test stack's modules are imported in main() only, so LocalCluster pays
# for no more than a user script would.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Phases of an overcast start, each ending at the first (or last) notification of a type.
PHASES = (("cluster-requested", "first", "API call (client -> control plane)"),
          ("scheduler-launched", "first", "network + security group + RunInstances"),
          ("scheduler-ready", "first", "scheduler boot (container, cloud-init, agent, dask)"),
          ("worker-ready", "last", "workers connect (after the scheduler is ready)"))


def time_local(n: int) -> float:
    start = time.perf_counter()
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        client.wait_for_workers(n)
        elapsed = time.perf_counter() - start
    return elapsed


def time_overcast(n: int, name: str, software: str | None = None) -> tuple[float, float]:
    """(seconds to n workers, wall-clock time of the call)."""
    import overcast

    wall, start = time.time(), time.perf_counter()
    with overcast.Cluster(name=name, n_workers=n, progress="none",
                          software=software) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(n)
        elapsed = time.perf_counter() - start
    return elapsed, wall


def phases(url: str, token: str, slug: str, name: str, wall: float,
           elapsed: float) -> list[float]:
    """Seconds spent in each of PHASES, and the rest (the client noticing and connecting)."""
    import httpx

    notes = httpx.get(f"{url}/api/v1/accounts/{slug}/notifications",
                      params={"cluster": name, "limit": 200},
                      headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
    at: dict[str, list[float]] = {}
    for note in notes:
        when = dt.datetime.fromisoformat(note["time"].replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        at.setdefault(note["event_type"], []).append(when.timestamp() - wall)
    marks = [min(at[e]) if which == "first" else max(at[e]) for e, which, _ in PHASES]
    ends = [*marks, elapsed]
    return [b - a for a, b in zip([0.0, *marks], ends, strict=True)]


def scheduler_log(url: str, token: str, slug: str, name: str, wall: float) -> list[str]:
    """The scheduler agent's log lines, each at its offset from the start call: where the
    boot's seconds went after the agent's first line (before it: container, init, imports)."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    doc = httpx.get(f"{url}/api/v1/accounts/{slug}/clusters/{name}", headers=headers,
                    timeout=10).json()
    scheduler = next((i["aws_id"] for i in doc.get("instances", [])
                      if i["role"] == "scheduler"), None)
    streams: dict = {}
    for _ in range(30):  # the agent ships its last lines as its VM powers off
        streams = httpx.get(f"{url}/api/v1/accounts/{slug}/clusters/{name}/logs",
                            headers=headers, timeout=30).json().get("streams", {})
        if streams.get(scheduler):
            break
        time.sleep(1)
    lines = [f"scheduler {scheduler}'s log, seconds from the start call:"]
    for event in streams.get(scheduler, [])[:20]:
        when = event.get("timestamp", 0) / 1000 - wall
        lines.append(f"{when:6.2f} s  {str(event.get('message', '')).strip()[:110]}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--settle", type=float, default=1.0,
                        help="pause between starts, so one's teardown does not slow the next")
    args = parser.parse_args()
    from overcast.server.bootstrap import ensure_first_user
    from overcast.store.db import Database
    from tests.e2e.stack import Stack

    home = Path(tempfile.mkdtemp(prefix="overcast-bench-"))
    os.environ["OVERCAST_HOME"] = str(home)
    stack = Stack(home)
    load_before = os.getloadavg()
    local: list[float] = []
    ours: list[float] = []
    split: list[list[float]] = []
    try:
        stack.start_cloud()
        stack.start_server()
        slug, token = ensure_first_user("bench", Database(f"sqlite:///{home / 'overcast.db'}"))
        os.environ["AWS_ENDPOINT_URL"] = stack.endpoint
        with dask.config.set({"overcast.server": stack.url, "overcast.token": token,
                              "overcast.account": slug}):
            build, _ = time_overcast(args.workers, "bench-warmup")  # image, network, role
            print(f"warm-up (image build, network, role): {build:.1f} s", file=sys.stderr)
            time_local(args.workers)
            for i in range(args.rounds):
                time.sleep(args.settle)
                local.append(time_local(args.workers))
                time.sleep(args.settle)
                elapsed, wall = time_overcast(args.workers, f"bench-{i}")
                ours.append(elapsed)
                split.append(phases(stack.url, token, slug, f"bench-{i}", wall, elapsed))
                print(f"round {i}: LocalCluster {local[-1]:.2f} s, overcast {ours[-1]:.2f} s",
                      file=sys.stderr)
                if i == args.rounds - 1:  # one round's scheduler boot, line by line
                    print("\n".join(scheduler_log(stack.url, token, slug, f"bench-{i}", wall)),
                          file=sys.stderr)
    finally:
        stack.stop()
    load_after = os.getloadavg()
    lm, om = statistics.median(local), statistics.median(ours)
    launcher = "containers of the overcast VM image"
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, instances: {launcher}, "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after\n")
    print("| workers | rounds | LocalCluster median (min-max) | overcast median (min-max) | "
          "ratio |")
    print("|---|---|---|---|---|")
    print(f"| {args.workers} | {args.rounds} | {lm:.2f} s ({min(local):.2f}-{max(local):.2f}) | "
          f"{om:.2f} s ({min(ours):.2f}-{max(ours):.2f}) | {om / lm:.2f}x |")
    print("\n| overcast phase (median) | seconds |\n|---|---|")
    labels = [label for _, _, label in PHASES] + ["client notices and connects"]
    for k, label in enumerate(labels):
        print(f"| {label} | {statistics.median(s[k] for s in split):.2f} |")


if __name__ == "__main__":
    main()
