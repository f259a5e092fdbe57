"""Hollow instances (`overcast local-cloud --hollow`): EC2 instances that run in moto but boot
nothing, like Kubernetes' kubemark hollow nodes. For load tests of the control plane.

Every instance moto holds in `running` (any AMI) gets what a booted one gets from the runner
(a loopback address, an IMDS entry, the instance profile's credentials), but no container:
its agent is played by a load generator (`overcast.localcloud.hollowagents`, used by
`bench/scale.py`) with the project's own agent client code. So the control plane sees real EC2
calls and real agent traffic, at a cost of a few kilobytes per instance instead of a VM.

The spool: for each running hollow instance, `$OVERCAST_HOME/run/hollow/<instance id>.json`
(directory 0700, files 0600: the user data holds the cluster token) with its ids and a copy of
what its IMDS answers on the paths an agent reads (`SPOOLED_PATHS`): the player reads one file
instead of a handful of IMDS requests per instance (the IMDS itself still answers, as today).
A file is written once the instance is registered and removed when the instance stops or
terminates, so the directory always lists the hollow instances that are up.

Lifecycle follows EC2 without a machine behind it: terminate and stop only drop the spool
file and IMDS entry; CreateImage of a hollow instance gives moto's own AMI (available at once,
no container image), whose instances are hollow as well.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("overcast.localcloud.hollow")

# IMDS paths under latest/ an agent reads at boot (overcast/agent/imds.py).
SPOOLED_PATHS = (
    "user-data",
    "meta-data/instance-id",
    "meta-data/local-ipv4",
    "meta-data/public-ipv4",
    "meta-data/placement/availability-zone",
    "meta-data/placement/region",
    "meta-data/instance-type",
    "dynamic/instance-identity/document",  # the signed identity document, where served
    "dynamic/instance-identity/signature",
)
CONSOLE = b"[local-cloud] hollow instance: nothing boots; its agent is played by a load test\n"


def spool_dir(run_dir: Path) -> Path:
    return run_dir / "hollow"


class HollowInstances:
    """The runner's instance keeper in hollow mode (the same interface as ContainerInstances)."""

    def __init__(self, runner: Any, spool: Path) -> None:
        self.runner = runner
        self.spool = spool
        self.up: dict[str, str] = {}  # instance id -> state the spool reflects ("running")
        self.boot_latency: dict[str, float] = {}
        self.timings: dict[str, float] = {}

    # -- lifecycle (nothing to prepare: no engine, no stock image) -----------------------------
    def start(self) -> None:
        if self.spool.exists():  # left by an earlier hollow local cloud: its instances are gone
            shutil.rmtree(self.spool)
        self.spool.mkdir(mode=0o700, parents=True)

    def stop(self) -> None:
        shutil.rmtree(self.spool, ignore_errors=True)

    def wants(self, inst: Any) -> bool:
        return True  # every AMI: a hollow instance needs no bootable disk

    # -- one runner pass -------------------------------------------------------------------
    def poll(self, found: list[tuple[str, str, Any, Any]]) -> None:
        seen = set()
        for _account, _region, backend, inst in found:
            seen.add(inst.id)
            if inst.state == "running" and inst.id not in self.up:
                self._register(inst, backend)
            elif inst.state != "running" and inst.id in self.up:
                self._drop(inst.id, terminated=inst.state in ("shutting-down", "terminated"))
        for iid in [i for i in self.up if i not in seen]:  # moto reset: the instance is gone
            self._drop(iid, terminated=True)

    def _register(self, inst: Any, backend: Any) -> None:
        started = time.monotonic()
        try:
            address = self.runner.register_instance(inst, backend, _user_data(inst))
            self._write(inst, address)
        except Exception as exc:  # noqa: BLE001 (as a VM that cannot boot: it ends)
            log.error("hollow instance %s cannot start: %s", inst.id, exc)
            self.runner.forget(inst.id)
            self.runner.terminate(inst.id, reason=f"Server.InternalError: {exc}")
            return
        self.up[inst.id] = "running"
        self.boot_latency[inst.id] = time.monotonic() - started

    def _write(self, inst: Any, address: str) -> None:
        imds = self.runner.imds
        metadata = {}
        for path in SPOOLED_PATHS:
            status, _ctype, body = imds.lookup(inst.id, path)
            if status == 200:
                metadata[path] = (body.decode("utf-8", "replace") if isinstance(body, bytes)
                                  else body)
        entry = {"instance_id": inst.id, "image_id": inst.image_id, "address": address,
                 "imds": imds.endpoint_for(inst.id), "metadata": metadata,
                 "spooled_at": time.time()}
        path = self.spool / f"{inst.id}.json"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(entry, f)
        tmp.replace(path)  # a reader sees a whole file or none

    def _drop(self, instance_id: str, terminated: bool) -> None:
        self.up.pop(instance_id, None)
        (self.spool / f"{instance_id}.json").unlink(missing_ok=True)
        if terminated:
            self.runner.forget(instance_id)

    # -- what motoimages asks ------------------------------------------------------------------
    def console(self, instance_id: str) -> bytes | None:
        return CONSOLE

    def can_commit(self, instance_id: str) -> bool:
        return False  # CreateImage: moto's own AMI, available at once

    def forget_image(self, ami_id: str) -> None:
        pass


def _user_data(inst: Any) -> bytes:
    import base64

    return base64.b64decode(inst.user_data.as_bytes()) if inst.user_data else b""
