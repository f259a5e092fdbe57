"""Batched launches: a cluster's requested instances that share role, zone, type and market go
out in one launch call (`LaunchSpec.count`), all or none, with one client token per batch.

Crash safety: a batch's token is written on its rows and committed *before* the call. A row
that still has a token and no instance id at the start of a later pass belongs to a call whose
answer was never recorded (the control plane was killed, or the call timed out): the pass
looks at the cloud at once (observe.py) and `Unrecorded` gives the instances found with that
token to those rows. If none are found, the batch is retried with the same token and the same
count, which the cloud answers with the same instances where it honours client tokens (EC2).
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from dataclasses import dataclass

from overcast.backends.base import InstanceInfo
from overcast.store.models import Cluster, Instance

# At most this many instances per call: a large cluster is a few calls (1,000 workers: 10),
# and one batch's capacity error moves no more than this many to another zone.
BATCH_MAX = 100
LIVE = ("requested", "launched", "booting", "ready")


@dataclass
class Batch:
    rows: list[Instance]
    token: str | None  # None: a fresh batch, its token is drawn when it is launched

    @property
    def first(self) -> Instance:
        return self.rows[0]


def new_token(cluster_id: int, rows: list[Instance]) -> str:
    """<= 64 ASCII characters. The count is part of it: a retry must ask for as many."""
    return f"overcast-{cluster_id}-{rows[0].id}-n{len(rows)}-{secrets.token_hex(6)}"


def token_count(token: str) -> int | None:
    part = next((p for p in token.split("-") if p.startswith("n") and p[1:].isdigit()), None)
    return int(part[1:]) if part else None


def plan(rows: list[Instance]) -> list[Batch]:
    """The launch calls for these requested rows: unrecorded batches first (same token, same
    rows), then fresh ones grouped by (role, zone, type, spot), schedulers first, each at most
    BATCH_MAX rows in id order."""
    retried: dict[str, list[Instance]] = defaultdict(list)
    fresh: dict[tuple, list[Instance]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r.id):
        if row.launch_token:
            retried[row.launch_token].append(row)
        else:
            fresh[(row.role != "scheduler", row.role, row.zone or "", row.instance_type,
                   row.spot)].append(row)
    batches = []
    for token, same in retried.items():
        if token_count(token) == len(same):
            batches.append(Batch(same, token))
        else:  # rows left the batch since (scaled down): ask anew for what remains
            fresh[(same[0].role != "scheduler", same[0].role, same[0].zone or "",
                   same[0].instance_type, same[0].spot)].extend(same)
    for key in sorted(fresh):
        group = sorted(fresh[key], key=lambda r: r.id)
        batches += [Batch(group[i:i + BATCH_MAX], None)
                    for i in range(0, len(group), BATCH_MAX)]
    return batches


def start(cluster: Cluster, batch: Batch) -> str:
    """Draw (or keep) the batch's token and write it on its rows; the caller commits."""
    batch.token = batch.token or new_token(cluster.id, batch.rows)
    for row in batch.rows:
        row.launch_token = batch.token
    return batch.token


def forget(batch: Batch) -> None:
    """The cloud refused the call (nothing was made): the rows get a new token next time."""
    for row in batch.rows:
        row.launch_token = None
    batch.token = None


def assign(cluster: Cluster, batch: Batch,
           infos: list[InstanceInfo]) -> list[tuple[Instance, InstanceInfo]]:
    """Give the call's instances to the batch's rows. Rows left without one (the cloud made
    fewer) lose the token, so the next pass launches them in a new batch."""
    known = {r.aws_id for r in cluster.instances if r.aws_id}
    new = [i for i in infos if i.aws_id not in known]
    pairs = []
    for row in batch.rows:
        if row.aws_id:
            continue
        if new:
            pairs.append((row, new.pop(0)))
        else:
            row.launch_token = None
    return pairs


class Unrecorded:
    """The rows of batches whose answer was not recorded, by token, for adoption."""

    def __init__(self, cluster: Cluster) -> None:
        self.rows: dict[str, list[Instance]] = defaultdict(list)
        for row in sorted(cluster.instances, key=lambda r: r.id):
            if row.launch_token and not row.aws_id and row.state in LIVE:
                self.rows[row.launch_token].append(row)
        self.adopted: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self.rows)

    def take(self, info: InstanceInfo) -> Instance | None:
        waiting = self.rows.get(info.launch_token or "")
        if not waiting:
            return None
        self.adopted.add(info.launch_token or "")
        return waiting.pop(0)

    def settle(self) -> None:
        """A batch found in the cloud was answered: its rows still without an instance (one
        already gone) are launched anew, under a new token."""
        for token in self.adopted:
            for row in self.rows.get(token, []):
                row.launch_token = None


def needs_look(cluster: Cluster) -> bool:
    """True when a row waits on a batch whose answer was not recorded."""
    return any(r.launch_token and not r.aws_id and r.state in LIVE for r in cluster.instances)
