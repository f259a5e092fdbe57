"""Play the agents of hollow instances (`overcast local-cloud --hollow`, hollow.py) with the
project's real agent client code, many in one process and one event loop.

For each hollow instance in the spool this runs what `overcast-agent` runs on a VM
(overcast/agent/main.py), minus dask and log shipping:
- identity: `IMDSClient.identity()` over the instance's spooled IMDS answers (`SpooledIMDS`;
  paths not spooled go to the local cloud's IMDS over HTTP), the signed identity document
  included, which the played agent sends on its instance routes as a real one does;
- boot document: `BootConfig.from_user_data` of its user data;
- boot: `agent.main._start` (TLS material, the scheduler's dashboard certificate, the
  scheduler's address for workers, "ready") with dask's start replaced by a hollow node;
- heartbeats: `dask_process.supervise`, the agent's own loop, until the control plane says stop
  or the instance goes (its spool file vanishes: stopped or terminated).
So the control plane sees the HTTP calls real agents make, at their real rates. What a hollow
node reports as its addresses are the instance's loopback address with dask's ports: no dask
runs there, nothing listens, and nothing but the control plane uses them.

An image builder (user data with `/etc/overcast/build.env`) is played too: it reports a
successful build as `bootstrap.sh` does (then CreateImage gives moto's own AMI).
An instance whose user data is neither (no overcast agent on it) is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from overcast.agent import dask_process as dp
from overcast.agent import main as agent_main
from overcast.agent.control import ControlPlane, _ssl_context
from overcast.agent.imds import IMDSClient, InstanceIdentity
from overcast.bootconfig import BootConfig

log = logging.getLogger("overcast.localcloud.hollowagents")

SCAN_INTERVAL = 0.1  # seconds between looks at the spool directory
WORKER_PORT = 9000  # what a hollow worker reports as its port (a real one picks a free port)


class SpooledIMDS(IMDSClient):
    """The agent's IMDS client over a hollow instance's spooled IMDS answers."""

    def __init__(self, entry: dict[str, Any]) -> None:
        super().__init__(entry["imds"])
        self._spooled: dict[str, str] = entry.get("metadata") or {}

    def get(self, path: str, *, required: bool = True) -> str | None:
        if path in self._spooled:
            return self._spooled[path]
        return super().get(path, required=required)  # the IMDS itself, over HTTP


class HollowServer:
    """Stands for the dask Scheduler/Worker object: running until closed."""

    def __init__(self) -> None:
        self.status = dp.Status.running
        self.close_reason: str | None = None
        self._done = asyncio.Event()

    async def finished(self) -> None:
        await self._done.wait()

    async def close(self, timeout: float | None = None, reason: str = "") -> None:
        self.status, self.close_reason = dp.Status.closed, reason or "overcast-stop"
        self._done.set()


@dataclass
class HollowNode(dp.Node):
    """A node whose heartbeat metrics are those of an idle scheduler (or a worker's `{}`)."""

    workers: Any = None  # () -> ready workers of this cluster (scheduler only)
    started: float = field(default_factory=time.monotonic)

    def metrics(self) -> dict[str, Any]:
        if self.role != "scheduler":
            return {}
        return {"workers": self.workers() if self.workers else 0, "tasks": 0, "clients": 0,
                "idle_seconds": round(time.monotonic() - self.started, 1)}


class CountingTransport(httpx.AsyncHTTPTransport):
    """Counts the agents' requests per route (e.g. "POST heartbeat") for the bench's report."""

    def __init__(self, counts: Counter, verify: Any) -> None:
        # The agent's own SSL context (built once per process, as on a VM): a default
        # transport builds one per agent, ~30 ms of CPU each, which held this process's event
        # loop for half a minute while 1,000 agents started (their requests timed out).
        super().__init__(verify=verify)
        self.counts = counts

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.counts[f"{request.method} {request.url.path.rsplit('/', 1)[-1]}"] += 1
        return await super().handle_async_request(request)


@dataclass
class Played:
    """One hollow instance's played agent."""

    entry: dict[str, Any]
    role: str = "?"
    cluster_id: int | None = None
    ready_at: float | None = None  # time.time() of its "ready"
    outcome: str | None = None  # why its agent ended
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None


class Player:
    """Watches the spool and plays one agent per hollow instance until `stop()`."""

    def __init__(self, spool: Path) -> None:
        self.spool = spool
        self.played: dict[str, Played] = {}
        self.requests: Counter = Counter()
        self.ready_workers: Counter = Counter()  # cluster id -> workers that reported ready
        self.errors: list[str] = []
        self._stopping: asyncio.Event | None = None

    # -- the loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        self._stopping = asyncio.Event()
        with hollow_dask():
            while not self._stopping.is_set():
                self._scan()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), SCAN_INTERVAL)
            for played in self.played.values():
                played.gone.set()
            tasks = [p.task for p in self.played.values() if p.task is not None]
            if tasks:
                await asyncio.wait(tasks, timeout=15)
            for task in tasks:
                task.cancel()

    def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    def _scan(self) -> None:
        present = _spooled_ids(self.spool)
        for iid in present - self.played.keys():
            entry = _read_entry(self.spool, iid)
            if entry is not None:
                played = self.played[iid] = Played(entry)
                played.task = asyncio.ensure_future(self._play(played))
        for iid, played in self.played.items():
            if iid not in present and not played.gone.is_set():
                played.gone.set()  # stopped or terminated: its "VM" is gone

    # -- one instance ------------------------------------------------------------------------
    async def _play(self, played: Played) -> None:
        try:
            ident = await asyncio.to_thread(SpooledIMDS(played.entry).identity)
            build = builder_settings(ident.user_data)
            if build is not None:
                played.role = "image-builder"
                played.outcome = await self._build(build)
                return
            try:
                boot = BootConfig.from_user_data(ident.user_data)
            except ValueError:  # no overcast agent on this "VM": nothing to play
                played.role, played.outcome = "other", "no overcast boot document"
                return
            played.role, played.cluster_id = boot.role, boot.cluster_id
            played.outcome = await self._agent(played, boot, ident)
        except Exception as exc:  # noqa: BLE001 (one failed agent is a result, not a crash)
            played.outcome = f"error: {type(exc).__name__}: {exc}"
            self.errors.append(f"{played.entry['instance_id']}: {played.outcome}")

    async def _agent(self, played: Played, boot: BootConfig, ident: InstanceIdentity) -> str:
        # As agent.main._amain: the signed identity document proves which instance calls.
        proof = (ident.document, ident.signature) if ident.document and ident.signature else None
        transport = CountingTransport(self.requests, _ssl_context(boot.control_plane_ca))
        control = ControlPlane(boot, ident.instance_id, identity=proof, transport=transport)
        try:
            started = await agent_main._unless_stopped(agent_main._start(boot, ident, control),
                                                       played.gone)
            if started is None:
                return "gone before ready"
            node: HollowNode = started  # type: ignore[assignment]
            played.ready_at = time.time()
            if node.role == "worker":
                self.ready_workers[boot.cluster_id] += 1
            else:
                node.workers = lambda: self.ready_workers[boot.cluster_id]
            return await dp.supervise(node, control, boot.heartbeat_interval, played.gone)
        finally:
            await control.aclose()

    async def _build(self, build: dict[str, str]) -> str:
        """What bootstrap.sh's `report ok` sends."""
        url = (f"{build['OVERCAST_CONTROL_PLANE'].rstrip('/')}/api/v1/images/builds/"
               f"{build['OVERCAST_BUILD_ID']}/report")
        async with httpx.AsyncClient(timeout=30) as http:
            resp = await http.post(url, json={"ok": True, "reason": "hollow image builder"},
                                   headers={"Authorization":
                                            f"Bearer {build['OVERCAST_BUILD_TOKEN']}"})
        self.requests["POST report"] += 1
        return f"reported build ok ({resp.status_code})"

    # -- what the bench reads ------------------------------------------------------------------
    def ready_times(self, cluster_id: int) -> list[float]:
        return [p.ready_at for p in self.played.values()
                if p.cluster_id == cluster_id and p.ready_at is not None]


def builder_settings(user_data: str) -> dict[str, str] | None:
    """An image builder's build.env (KEY=shell-quoted value lines), or None for other user data."""
    if "/etc/overcast/build.env" not in user_data:
        return None
    import yaml

    doc = yaml.safe_load(user_data)
    for f in doc.get("write_files") or []:
        if f.get("path") == "/etc/overcast/build.env":
            pairs = (line.split("=", 1) for line in f["content"].splitlines() if "=" in line)
            return {k: shlex.split(v)[0] if v else "" for k, v in pairs}
    return None


def _spooled_ids(spool: Path) -> set[str]:
    try:
        return {e.name[:-5] for e in os.scandir(spool) if e.name.endswith(".json")}
    except FileNotFoundError:
        return set()


def _read_entry(spool: Path, instance_id: str) -> dict[str, Any] | None:
    try:
        return json.loads((spool / f"{instance_id}.json").read_text())
    except (OSError, ValueError):  # removed meanwhile (terminated)
        return None


# -- dask replaced by hollow nodes, for the duration of a play -------------------------------
async def _hollow_scheduler(boot: BootConfig, ident: InstanceIdentity, security: Any,
                            dashboard_tls: Any = None) -> HollowNode:
    address = f"tls://{ident.local_ipv4}:{boot.scheduler_port}"
    return HollowNode(server=HollowServer(), role="scheduler", address=address,
                      dashboard_address=f"https://{ident.local_ipv4}:{boot.dashboard_port}/status",
                      internal_address=address)


async def _hollow_worker(boot: BootConfig, ident: InstanceIdentity, security: Any,
                         scheduler_address: str) -> HollowNode:
    address = f"tls://{ident.local_ipv4}:{WORKER_PORT}"
    return HollowNode(server=HollowServer(), role="worker", address=address,
                      dashboard_address=None, internal_address=address)


@contextlib.contextmanager
def hollow_dask() -> Iterator[None]:
    """The agent's dask start functions swapped for hollow nodes (restored afterwards)."""
    saved = {name: getattr(dp, name) for name in ("start_scheduler", "start_worker",
                                                  "node_security")}
    dp.start_scheduler = _hollow_scheduler  # type: ignore[assignment]
    dp.start_worker = _hollow_worker  # type: ignore[assignment]
    dp.node_security = lambda tls: None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(dp, name, value)
