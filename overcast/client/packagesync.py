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


def name_version(dist: metadata.Distribution) -> tuple[str | None, str]:
    """From the `name-version.dist-info` folder's name when it is one (as pip writes it),
    else from METADATA: parsing ~150 METADATA files costs ~0.4 s per cluster request."""
    folder = getattr(dist, "_path", None)
    stem = getattr(folder, "name", "")
    if stem.endswith(".dist-info"):
        parts = stem[: -len(".dist-info")].split("-")
        if len(parts) == 2 and all(parts):
            return parts[0], parts[1]
    return dist.metadata.get("Name"), dist.version


def collect() -> dict[str, Any]:
    """The package_sync spec body: {"python", "packages": [...], "local": [...]}."""
    packages: dict[str, str] = {}
    local: dict[str, dict[str, str]] = {}
    for dist in metadata.distributions():
        name, version = name_version(dist)
        if not name or canonical_name(name) in SKIP:
            continue
        key = canonical_name(name)
        if key in packages or key in local:
            continue  # the first on sys.path wins, as for imports
        origin = local_origin(dist)
        if origin:
            local[key] = {"name": key, "version": version, "url": origin}
        else:
            packages[key] = version
    return {"python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "packages": [{"name": n, "version": v} for n, v in sorted(packages.items())],
            "local": sorted(local.values(), key=lambda x: x["name"])}
