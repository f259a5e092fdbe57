"""How long things may take: cluster start, VM boot, heartbeats, idle and no-client lifetimes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from overcast.options import ClusterOptions
from overcast.reconciler.liveness import Liveness
from overcast.store.models import Cluster, Instance, utcnow


def _env_seconds(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass
class Timeouts:
    start: float = field(default_factory=lambda: _env_seconds("OVERCAST_START_TIMEOUT", 300))
    boot: float = field(default_factory=lambda: _env_seconds("OVERCAST_BOOT_TIMEOUT", 180))
    # Workers beat every 15 s +-20% and beats are written in 2 s batches: 60 s is three
    # missed beats (docs/liveness.md).
    heartbeat: float = field(default_factory=lambda: _env_seconds("OVERCAST_HEARTBEAT_TIMEOUT",
                                                                  60))

    # Counts only time the control plane was up (liveness.py); None: plain wall time.
    liveness: Liveness | None = None

    def up_since(self, moment: datetime | None) -> timedelta:
        if self.liveness is not None:
            return self.liveness.since(moment)
        return utcnow() - (moment or utcnow())

    def stale_instances(self, cluster: Cluster) -> list[Instance]:
        stale = []
        for row in cluster.instances:
            booting_too_long = row.state in ("launched", "booting") and \
                self.up_since(row.created_at) > timedelta(seconds=self.boot)
            silent = row.state == "ready" and row.last_heartbeat is not None and \
                self.up_since(row.last_heartbeat) > timedelta(seconds=self.heartbeat)
            if booting_too_long or silent:
                stale.append(row)
        return stale

    def stale_reason(self, row: Instance) -> str:
        if row.state == "ready":
            return f"no heartbeat for {self.heartbeat:.0f} s"
        return f"its agent did not report within {self.boot:.0f} s of launch"

    def check_lifetime(self, session, cluster: Cluster, opts: ClusterOptions, stop) -> None:
        """Stop a running cluster that sat idle, or had no client, for too long."""
        activity = cluster.activity or {}
        idle = activity.get("idle_seconds")
        if idle is not None and idle >= opts.idle_timeout:
            stop(session, cluster, "idle-timeout",
                 f"Stopped after {opts.idle_timeout:.0f} s without tasks (idle_timeout)")
            return
        no_client_since = activity.get("no_client_seconds")
        if no_client_since is not None and no_client_since >= opts.no_client_timeout:
            stop(session, cluster, "no-client-timeout",
                 f"Stopped after {opts.no_client_timeout:.0f} s without a client "
                 f"(no_client_timeout)")
