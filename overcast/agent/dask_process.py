"""Run the dask scheduler or worker in the agent's own process and event loop.

In-process rather than a ``dask scheduler`` subprocess: one interpreter start and one import of
distributed fewer, which is most of a node's start latency.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any

from distributed import Scheduler, Security, Worker
from distributed.core import Status
from distributed.metrics import time as dask_time

from overcast.agent import dashboard_gate
from overcast.agent.control import LONG_POLL, ControlPlane, ControlPlaneError, NodeTLS
from overcast.agent.imds import InstanceIdentity
from overcast.bootconfig import BootConfig
from overcast.dashboardcred import dashboard_token
from overcast.security import dask_security

logger = logging.getLogger("overcast.agent")

# Close reasons that are part of a normal shutdown, not a failure of this node.
# "scheduler-remove-worker": the scheduler retired this worker (Adaptive scaling down); the
# control plane is told to remove the instance, so its going away is no failure.
NORMAL_WORKER_CLOSE = {"scheduler-close", "scheduler-remove-worker"}


class _ReasonMixin:
    """Remembers why dask closed the server, to tell a normal shutdown from a failure."""

    close_reason: str | None = None

    async def close(self, *args: Any, **kwargs: Any) -> Any:
        if self.close_reason is None:
            self.close_reason = str(kwargs.get("reason", "unknown"))
        return await super().close(*args, **kwargs)  # type: ignore[misc]


class OvercastScheduler(_ReasonMixin, Scheduler):
    pass


class OvercastWorker(_ReasonMixin, Worker):
    pass


@dataclass
class Node:
    server: OvercastScheduler | OvercastWorker
    role: str
    address: str  # what the control plane publishes
    dashboard_address: str | None
    internal_address: str  # what other nodes of the cluster should dial (private IP)

    def metrics(self) -> dict[str, Any]:
        if isinstance(self.server, Scheduler):
            return scheduler_metrics(self.server)
        return {}

    @property
    def closed(self) -> bool:
        return self.server.status in (Status.closing, Status.closed, Status.failed)


def node_security(tls: NodeTLS) -> Security:
    return dask_security(tls.ca_cert, tls.cert, tls.key)


def scheduler_metrics(s: Scheduler) -> dict[str, Any]:
    # idle_since is maintained by the scheduler's own check_idle (every 250 ms): None while any
    # task is processing/queued or a graph update is running, else when activity last stopped.
    idle_since = s.idle_since
    idle = max(0.0, dask_time() - idle_since) if idle_since else 0.0
    return {
        "workers": len(s.workers),
        "tasks": sum(len(ws.processing) for ws in s.workers.values()),
        # "fire-and-forget" is a pseudo client every scheduler has.
        "clients": sum(1 for c in s.clients if c != "fire-and-forget"),
        "idle_seconds": round(idle, 1),
    }


async def start_scheduler(boot: BootConfig, ident: InstanceIdentity, security: Security,
                          dashboard_tls: tuple[str, str] | None = None) -> Node:
    """The scheduler; its dashboard serves HTTPS with `dashboard_tls` (cert, key PEM), else
    with the node certificate."""
    local_ip = ident.local_ipv4
    public_ip = ident.public_ipv4 or local_ip
    # Bind the private address (on EC2 the public IP is NATed to it, and is not on any interface;
    # in the local cloud both are this instance's own 127.B.x.y).
    # The dashboard's HTTP server serves HTTPS with the node certificate (the cluster's CA signs
    # it) and answers only requests with the cluster's dashboard token (dashboard_gate).
    cert, key = dashboard_tls or (security.tls_scheduler_cert, security.tls_scheduler_key)
    with dashboard_gate.https_config(cert, key):
        scheduler = OvercastScheduler(
            host=local_ip,
            port=boot.scheduler_port,
            protocol="tls",
            # The HTTP server listens now; the bokeh dashboard is attached after "ready" (see
            # attach_dashboard): importing bokeh costs ~1 s, a third of a scheduler's start.
            dashboard=False,
            dashboard_address=f"{local_ip}:{boot.dashboard_port}",
            security=security,
        )
    dashboard_gate.install(scheduler, dashboard_token(boot.cluster_token))
    await scheduler
    logger.info("dask scheduler listening at %s", scheduler.address)
    return Node(
        server=scheduler,
        role="scheduler",
        address=f"tls://{public_ip}:{boot.scheduler_port}",
        dashboard_address=f"https://{public_ip}:{boot.dashboard_port}/status",
        internal_address=f"tls://{local_ip}:{boot.scheduler_port}",
    )


async def attach_dashboard(scheduler: Scheduler) -> None:
    """Add the bokeh dashboard (/status etc.) to a running scheduler's HTTP server. The import runs
    in a thread, so the event loop keeps serving workers and clients meanwhile."""
    try:
        loop = asyncio.get_running_loop()
        dashboard = await loop.run_in_executor(
            None, importlib.import_module, "distributed.dashboard.scheduler"
        )
        if scheduler.status != Status.running:
            return
        dashboard.connect(scheduler.http_application, scheduler.http_server, scheduler, prefix="/")
        logger.info("dashboard attached")
    except Exception as exc:  # noqa: BLE001 - a missing dashboard must not take the cluster down
        logger.warning("could not start the dask dashboard: %s", exc)


async def wait_for_scheduler(control: ControlPlane, *, wait: float = LONG_POLL,
                             max_delay: float = 1.0) -> str:
    """Long-poll the control plane until the scheduler has reported ready: each request is
    answered as soon as the address is known (or after `wait` seconds, then asked again). An
    answer that comes back at once without an address (a control plane without long-polls,
    or a cluster going away) is asked again after a growing pause, never in a tight loop."""
    delay = 0.05
    while True:
        asked = time.monotonic()
        address = await control.scheduler_address(wait=wait)
        if address:
            return address
        if time.monotonic() - asked < wait / 2:
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


def jittered(interval: float) -> float:
    """`interval` +-20%: a thousand workers started together do not beat together."""
    return interval * random.uniform(0.8, 1.2)


async def start_worker(
    boot: BootConfig,
    ident: InstanceIdentity,
    security: Security,
    scheduler_address: str,
) -> Node:
    local_ip = ident.local_ipv4
    # No Nanny: it would be a second process (slower start, more memory) whose only job is to
    # restart a crashed worker; here the control plane replaces a failed instance instead.
    worker = OvercastWorker(
        scheduler_address,
        security=security,
        host=local_ip,
        protocol="tls",
        # The worker's small HTTP server (health, metrics) on this VM's address, not 0.0.0.0.
        dashboard_address=f"{local_ip}:0",
        nthreads=boot.nthreads or os.cpu_count() or 1,
        resources=dict(boot.worker_resources) or None,
        name=ident.instance_id,
    )
    await worker
    logger.info("dask worker %s connected to %s", worker.address, scheduler_address)
    return Node(
        server=worker,
        role="worker",
        address=worker.address,
        dashboard_address=None,
        internal_address=worker.address,
    )


async def supervise(
    node: Node,
    control: ControlPlane,
    interval: float,
    stop: asyncio.Event,
) -> str:
    """Heartbeat until told to stop. Returns why: "stop" (the control plane said so),
    "signal" (SIGTERM/SIGINT), "closed" (dask closed the server by itself) or "unreachable"
    (no answer from the control plane for `shutdown_after_unreachable`: the watchdog)."""
    finished = asyncio.ensure_future(node.server.finished())
    stopped = asyncio.ensure_future(stop.wait())
    failures = 0
    try:
        if node.role == "worker":
            # Its ready report just said it is alive: workers that became ready together
            # spread their first beats over an interval instead of all beating at once.
            await asyncio.wait({finished, stopped}, timeout=random.uniform(0, interval),
                               return_when=asyncio.FIRST_COMPLETED)
            if stopped.done():
                return "signal"
        while True:
            if node.closed or finished.done():
                return "closed"
            beat = asyncio.ensure_future(control.heartbeat(node.metrics()))
            await asyncio.wait({beat, finished, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if stopped.done():
                beat.cancel()
                return "signal"
            if finished.done():
                beat.cancel()
                return "closed"
            try:
                action = beat.result()
            except (ControlPlaneError, ConnectionError) as exc:
                # The control plane may be restarting: dask keeps running meanwhile.
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    logger.warning("heartbeat failed (%d in a row): %s", failures, exc)
                if isinstance(exc, ConnectionError) and control.gave_up():
                    logger.error("the control plane has not answered for %.0f s "
                                 "(shutdown_after_unreachable): stopping this VM",
                                 control.unreachable_for())
                    return "unreachable"
            else:
                failures = 0
                if action == "stop":
                    logger.info("control plane asked this %s to stop", node.role)
                    return "stop"
            await asyncio.wait(
                {finished, stopped}, timeout=jittered(interval),
                return_when=asyncio.FIRST_COMPLETED
            )
            if stopped.done():
                return "signal"
    finally:
        finished.cancel()
        stopped.cancel()


async def close_node(node: Node, timeout: float = 10.0) -> None:
    """Graceful close, bounded: the VM is going away, a peer that vanished at the same moment
    (the scheduler closing while a worker closes) must not hold the exit for dask's 30 s comm
    timeouts. A scheduler tells its workers to close (reason "scheduler-close")."""
    try:
        if node.closed:
            await asyncio.wait_for(node.server.finished(), timeout)
        elif isinstance(node.server, Worker):
            await asyncio.wait_for(
                node.server.close(timeout=timeout / 2, reason="overcast-stop"), timeout
            )
        else:
            await asyncio.wait_for(node.server.close(reason="overcast-stop"), timeout)
    except TimeoutError:
        logger.warning("dask %s did not close within %.0f s; exiting anyway", node.role, timeout)


def unexpected_close(node: Node) -> str | None:
    """None if dask closed the server as part of a normal shutdown, else a reason to report."""
    reason = node.server.close_reason or "unknown"
    if node.role == "worker" and reason in NORMAL_WORKER_CLOSE:
        return None
    return f"dask {node.role} closed by itself ({reason})"
