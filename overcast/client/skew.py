"""Version skew between the client and its cluster, shown before any task runs.

distributed's own `versions` machinery gives the scheduler's and workers' versions; we
compare the packages that decide whether tasks and results travel (python, dask,
distributed, cloudpickle) and refuse a cluster whose `distributed` differs in its major
version (the wire protocol changes across those).
"""

from __future__ import annotations

from typing import Any

from distributed.utils import asciitable
from distributed.versions import get_versions

CHECKED = ("python", "dask", "distributed", "cloudpickle")


class VersionSkewError(RuntimeError):
    """The client's and the cluster's `distributed` are too far apart to work together."""


def _pkgs(doc: dict[str, Any] | None) -> dict[str, Any]:
    return (doc or {}).get("packages") or {}


def differences(client: dict[str, Any], scheduler: dict[str, Any],
                workers: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """Rows (package, client, scheduler, workers) for every checked package that differs."""
    rows = []
    for pkg in CHECKED:
        mine = str(_pkgs(client).get(pkg))
        theirs = str(_pkgs(scheduler).get(pkg, "MISSING"))
        on_workers = {str(_pkgs(w).get(pkg, "MISSING")) for w in workers.values()}
        if {mine, theirs} | on_workers != {mine}:
            rows.append((pkg, mine, theirs, ", ".join(sorted(on_workers)) or "-"))
    return rows


def major(version: str) -> str:
    return version.split(".")[0]


def check(client: dict[str, Any], versions: dict[str, Any]) -> str | None:
    """The table of differences (None when none); VersionSkewError on a major mismatch of
    `distributed`. `versions` is the scheduler's `versions` answer."""
    scheduler, workers = versions.get("scheduler"), versions.get("workers") or {}
    rows = differences(client, scheduler, workers)
    if not rows:
        return None
    table = asciitable(["Package", "Client", "Scheduler", "Workers"], rows)
    mine = str(_pkgs(client).get("distributed"))
    others = {str(_pkgs(scheduler).get("distributed"))} | {
        str(_pkgs(w).get("distributed")) for w in workers.values()}
    if any(major(o) != major(mine) for o in others):
        raise VersionSkewError(
            f"The cluster runs another major version of distributed than this client "
            f"({mine}); they cannot work together. Use a software environment with "
            f"distributed=={mine} (package sync does this), or install the cluster's "
            f"version here.\n{table}")
    return "Client and cluster versions differ:\n" + table


def client_versions() -> dict[str, Any]:
    return get_versions()
