"""Software environment image builds, and cluster start with a prebuilt environment.

    .venv/bin/python bench/env_build.py [--rounds 3] [--workers 4]

- first build: a new environment (`pip: appdirs==1.4.3`, plus the control plane's
  distributed, locked with uv) from `POST .../software-environments` to `build_state` ready:
  builder launch, login, wheels, base image, docker build, push;
- changed spec: the same plus `six==1.16.0` (a new lock, a new build; most wheels are in the
  VPC mirror already);
- same lock again: another environment with the first one's packages: reused, no build;
- cluster start: `Cluster(n_workers=W, software=<the first one>)` to W workers connected,
  interleaved with `distributed.LocalCluster(n_workers=W)` in the same run.

Starts its own local cloud and control plane (free ports, a temporary OVERCAST_HOME) and
stops them at the end. Prints markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dask

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def create_and_wait(url: str, token: str, slug: str, name: str, packages: list[str],
                    timeout: float = 1800) -> tuple[float, str]:
    """(seconds from create to ready, what the last notification of it said)."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    base = f"{url}/api/v1/accounts/{slug}/software-environments"
    start = time.perf_counter()
    r = httpx.post(base, json={"name": name, "spec": {"kind": "pip", "packages": packages}},
                   headers=headers, timeout=180)
    r.raise_for_status()
    while time.perf_counter() - start < timeout:
        env = httpx.get(f"{base}/{name}", headers=headers, timeout=10).json()
        if env["build_state"] == "ready":
            return time.perf_counter() - start, env["image_uri"]
        if env["build_state"] == "error":
            raise RuntimeError(f"build of {name} failed: {env['reason']}")
        time.sleep(0.5)
    raise TimeoutError(name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    from bench.start_latency import time_local, time_overcast
    from overcast.server.bootstrap import ensure_first_user
    from overcast.store.db import Database
    from tests.e2e.stack import Stack

    home = Path(tempfile.mkdtemp(prefix="overcast-bench-"))
    os.environ["OVERCAST_HOME"] = str(home)
    stack = Stack(home)
    load_before = os.getloadavg()
    builds: list[tuple[str, float]] = []
    local: list[float] = []
    ours: list[float] = []
    try:
        stack.start_cloud()
        stack.start_server()
        slug, token = ensure_first_user("bench", Database(f"sqlite:///{home / 'overcast.db'}"))
        t = time.perf_counter()
        stack.build_images(slug, token)
        print(f"VM image build: {time.perf_counter() - t:.1f} s", file=sys.stderr)
        tag = secrets.token_hex(3)
        first = ["appdirs==1.4.3"]
        for label, name, pkgs in (("first build (new lock)", f"b1-{tag}", first),
                                  ("changed spec (new lock)", f"b2-{tag}",
                                   [*first, "six==1.16.0"]),
                                  ("same lock again (reused)", f"b3-{tag}", first)):
            took, image = create_and_wait(stack.url, token, slug, name, pkgs)
            builds.append((label, took))
            print(f"{label}: {took:.1f} s ({image})", file=sys.stderr)
        os.environ["AWS_ENDPOINT_URL"] = stack.endpoint
        with dask.config.set({"overcast.server": stack.url, "overcast.token": token,
                              "overcast.account": slug}):
            time_local(args.workers)
            for i in range(args.rounds):
                local.append(time_local(args.workers))
                ours.append(time_overcast(args.workers, f"bench-env-{i}",
                                          software=f"b1-{tag}")[0])
                print(f"round {i}: LocalCluster {local[-1]:.2f} s, overcast {ours[-1]:.2f} s",
                      file=sys.stderr)
    finally:
        stack.stop()
    load_after = os.getloadavg()
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after\n")
    print("| environment image | seconds to ready |\n|---|---|")
    for label, took in builds:
        print(f"| {label} | {took:.1f} |")
    lm, om = statistics.median(local), statistics.median(ours)
    print("\n| workers | rounds | LocalCluster median (min-max) | overcast with a prebuilt "
          "environment median (min-max) | ratio |\n|---|---|---|---|---|")
    print(f"| {args.workers} | {args.rounds} | {lm:.2f} s ({min(local):.2f}-{max(local):.2f}) "
          f"| {om:.2f} s ({min(ours):.2f}-{max(ours):.2f}) | {om / lm:.2f}x |")


if __name__ == "__main__":
    main()
