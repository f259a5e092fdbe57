"""What a software environment costs before any build: package sync and locking.

    .venv/bin/python bench/env_lock.py [--rounds 3]

- package sync: `packagesync.collect()` of this venv (what `Cluster()` sends);
- lock of a pip spec (`uv pip compile --no-build`, metadata only): cold (empty uv cache) and
  warm (the same spec again, cache kept), as the control plane does it in the create request.
Uses a temporary OVERCAST_HOME (so its own uv cache). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from overcast.client import packagesync
    from overcast.envs import lock

    spec = {"kind": "pip", "packages": ["pandas==3.1.1", "scikit-learn"]}
    sync = [timed(packagesync.collect) for _ in range(args.rounds)]
    cold, warm = [], []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as home:
            os.environ["OVERCAST_HOME"] = home
            cold.append(timed(lambda: lock.resolve(spec)))
            warm.append(timed(lambda: lock.resolve(spec)))
    n = len(packagesync.collect()["packages"])
    print("| step | median (s) | min (s) | max (s) |\n| --- | --- | --- | --- |")
    for name, xs in ((f"package sync collect ({n} distributions)", sync),
                     ("lock pandas + scikit-learn, cold uv cache", cold),
                     ("lock pandas + scikit-learn, warm uv cache", warm)):
        print(f"| {name} | {statistics.median(xs):.2f} | {min(xs):.2f} | {max(xs):.2f} |")


if __name__ == "__main__":
    main()
