"""Package sync: the client's installed distributions, sent when a cluster is requested.

Exact versions from importlib.metadata. A distribution installed from local files (editable,
or a `file://` direct URL, PEP 610) is listed under "local": no builder could fetch it, so
the control plane refuses it by name (building from files the client sends is not done yet).
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from typing import Any

from overcast.envs.spec import canonical_name

# Not synced: overcast itself comes with the VM image (the agent), and pip's own tools.
SKIP = {"overcast", "pip", "setuptools", "wheel"}


def local_origin(dist: metadata.Distribution) -> str | None:
    """The local URL a distribution was installed from, or None for an index install."""
    try:
        text = dist.read_text("direct_url.json")
    except OSError:
        return None
    if not text:
        return None
    try:
        info = json.loads(text)
    except ValueError:
        return None
    url = str(info.get("url") or "")
    editable = bool((info.get("dir_info") or {}).get("editable"))
    return url if editable or url.startswith("file:") else None


def collect() -> dict[str, Any]:
    """The package_sync spec body: {"python", "packages": [...], "local": [...]}."""
    packages: dict[str, str] = {}
    local: dict[str, dict[str, str]] = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if not name or canonical_name(name) in SKIP:
            continue
        key = canonical_name(name)
        origin = local_origin(dist)
        if origin:
            local[key] = {"name": key, "version": dist.version, "url": origin}
        elif key not in packages:  # the first on sys.path wins, as for imports
            packages[key] = dist.version
    return {"python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "packages": [{"name": n, "version": v} for n, v in sorted(packages.items())],
            "local": sorted(local.values(), key=lambda x: x["name"])}
