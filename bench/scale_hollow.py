"""bench/scale.py's cases on hollow instances (`overcast local-cloud --hollow`): "launch" and
"idle". A local cloud whose instances boot nothing, a control plane recording its own AWS calls
(OVERCAST_RECORD_AWS_ACTIONS), and one process playing every instance's agent with the
project's agent client code (tests/e2e/hollowstack.py, overcast/localcloud/hollowagents.py).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from tests.e2e.hollowstack import hollow_stack


def launch_timeout(workers: int) -> float:
    return 60 + 0.3 * workers  # bounded: a slow "before" run reports how far it got


def launch_case(store: str, workers: list[int]) -> Iterator[dict[str, Any]]:
    """For each N: from the create request to every worker registered (workers_ready == N,
    state running), and the control plane's AWS calls in that window. A 1-worker cluster is
    started and stopped first: the account's one-time resources are not in any N's figure."""
    with hollow_stack(store) as bench:
        bench.api.post("/clusters", json={"name": "warmup", "n_workers": 1}).raise_for_status()
        bench.wait_running("warmup", 1, 300)
        bench.stop_cluster("warmup")
        for n in workers:
            name = f"launch{n}"
            start = time.time()
            bench.api.post("/clusters", json={"name": name, "n_workers": n}).raise_for_status()
            seen: list[tuple[float, int]] = []
            c = bench.wait_running(name, n, launch_timeout(n), seen)
            end = time.time()
            ok = c["state"] == "running" and c["workers_ready"] >= n
            calls = bench.calls_between(start, end)
            yield {"case": "launch", "store": store, "workers": n,
                   "launch_seconds": round(end - start, 2) if ok else None,
                   "aws_calls": len(calls), "workers_ready": c["workers_ready"],
                   "state": c["state"], "timeout_seconds": None if ok else launch_timeout(n),
                   "actions": dict(Counter(call["action"] for call in calls)),
                   "agent_requests": bench.player.requests(),
                   "agent_errors": bench.player.player.errors[:3],
                   "timeline": timeline(bench, name, start, n, seen)}
            if n != workers[-1]:  # the next N starts alone (the last goes with the stack)
                bench.stop_cluster(name)


def timeline(bench: Any, name: str, start: float, n: int,
             seen: list[tuple[float, int]]) -> dict[str, Any]:
    """Where the seconds went: each launch call's notification, and when a quarter, half and
    all of the workers were registered (seconds from the create request)."""
    notes = bench.api.get("/notifications", params={"cluster": name, "limit": 1000}).json()
    launched = sorted(round(_epoch(note["time"]) - start, 2) for note in notes
                      if note["event_type"].endswith("-launched"))
    ready = {f"ready_{int(share * 100)}pct": next(
        (round(t - start, 2) for t, count in seen if count >= share * n), None)
        for share in (0.25, 0.5, 1.0)}
    curve = [(round(t - start, 1), count) for t, count in seen]
    steps = [point for i, point in enumerate(curve) if i == 0 or point[1] != curve[i - 1][1]]
    return {"launch_calls_done": launched, **ready, "ready_steps": steps}


def _epoch(iso: str) -> float:
    from datetime import UTC, datetime

    when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def idle_case(store: str, clusters: int = 100, seconds: float = 120.0) -> dict[str, Any]:
    """`clusters` running clusters (a scheduler each, its agent played) left alone for
    `seconds`: the control plane's AWS calls per cluster per minute."""
    with hollow_stack(store) as bench:
        for n in range(clusters):
            bench.api.post("/clusters", json={"name": f"idle{n}", "n_workers": 0})
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            states = [c["state"] for c in bench.api.get("/clusters").json()]
            if states.count("running") == clusters or "error" in states:
                break
            time.sleep(1)
        running = states.count("running")
        time.sleep(5)  # the last starts' own calls out of the window
        before = bench.player.requests()
        start = time.time()
        time.sleep(seconds)
        window = bench.calls_between(start, start + seconds)
        after = bench.player.requests()
    agent = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return {"case": "idle", "store": store, "clusters": running, "seconds": seconds,
            "aws_calls": len(window),
            "actions": dict(Counter(call["action"] for call in window)),
            "aws_calls_per_cluster_minute": round(len(window) / max(running, 1)
                                                  / (seconds / 60), 3),
            "agent_requests_per_second": round(sum(agent.values()) / seconds, 1)}
