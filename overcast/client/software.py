"""What a cluster request says about the software its VMs run."""

from __future__ import annotations

from typing import Any

from overcast.client import config
from overcast.client.validate import truthy


def software_request(software: str | None) -> dict[str, Any]:
    """The request's fields: a named software environment, else package sync (the client's
    installed packages), else none (the VM image's own packages)."""
    if software:
        return {"software": software}
    if not truthy(config.get("package-sync")):
        return {}  # overcast.package-sync: false
    from overcast.client import packagesync

    return {"package_sync": packagesync.collect()}
