"""``overcast-agent``: the first process on every overcast VM. No arguments: the boot document is
/etc/overcast/boot.json (written by cloud-init from the user data; else the IMDS user data), the
VM's identity comes from the instance metadata service (see docs/boot-path.md).

Boot: IMDS + boot document -> TLS material from the control plane -> dask scheduler or worker in
this process -> "ready" -> heartbeats until the control plane says stop (or SIGTERM).
Exit codes: 0 normal stop, 1 failure (reported to the control plane), 2 no usable boot config,
3 the control plane was unreachable for `shutdown_after_unreachable` (the watchdog). Whatever
the code, the service wrapper powers the VM off after the agent exits (docs/boot-path.md).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from overcast import bootconfig
from overcast.agent import logship
from overcast.agent.control import ControlPlane, ControlPlaneError
from overcast.agent.imds import IMDSClient, InstanceIdentity
from overcast.bootconfig import BootConfig

if TYPE_CHECKING:
    from overcast.agent.dask_process import Node

logger = logging.getLogger("overcast.agent")
T = TypeVar("T")

# Ship logs from this point even if dask is slow to come up (a worker waiting for its scheduler).
LOGSHIP_START_AFTER = 5.0
EXIT_UNREACHABLE = 3


def main() -> None:
    code = run()
    # os._exit, not sys.exit: the agent's work is done and its logs are flushed; a dask thread
    # pool or a task that ignores cancellation must not keep the process (and its VM slot)
    # alive at interpreter teardown.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run() -> int:
    _configure_stderr_logging()
    try:
        ident = IMDSClient().identity()
        # /etc/overcast/boot.json (written by cloud-init), else the IMDS user data.
        boot = bootconfig.load(ident.user_data)
    except Exception as exc:  # noqa: BLE001 - no control plane to tell: its address is in there
        logger.error("cannot read this VM's overcast boot config: %s", exc)
        return 2
    from overcast.agent import envrun

    if envrun.wanted(boot):  # dask runs in the cluster's software environment image
        return envrun.run_in_image(boot, ident)
    ship = logship.CloudWatchHandler(boot.log_group, ident.instance_id, boot.region)
    logship.install(ship)
    logger.info(
        "overcast-agent: cluster %s, role %s, instance %s (%s, zone %s)",
        boot.cluster_id,
        boot.role,
        ident.instance_id,
        ident.local_ipv4,
        ident.availability_zone,
    )
    # A bare loop rather than asyncio.run: its teardown cancels every task and waits for them,
    # and a half-closed dask server can keep that waiting forever.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_amain(boot, ident, ship))
    finally:
        ship.close()  # final flush; logging.shutdown would too, but be explicit


def _configure_stderr_logging() -> None:
    root = logging.getLogger()
    if not any(type(h) is logging.StreamHandler for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s - " + logship.LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(logging.INFO)


async def _amain(boot: BootConfig, ident: InstanceIdentity, ship: logship.CloudWatchHandler) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    proof = (ident.document, ident.signature) if ident.document and ident.signature else None
    if proof is None:
        logger.warning("the IMDS serves no signed identity document: the control plane will "
                       "refuse this instance's reports")
    control = ControlPlane(boot, ident.instance_id, identity=proof)
    ship_timer = loop.call_later(LOGSHIP_START_AFTER, ship.start)
    node: Node | None = None
    try:
        if boot.role not in ("scheduler", "worker"):
            raise ValueError(f"unknown role {boot.role!r} in the boot config")
        started = await _unless_stopped(_start(boot, ident, control), stop)
        if started is None:
            logger.info("stopped before dask was up")
            return 0
        node = started
        ship_timer.cancel()
        ship.start()

        from overcast.agent import dask_process as dp

        dashboard = None
        if node.role == "scheduler":
            dashboard = asyncio.ensure_future(dp.attach_dashboard(node.server))

        why = await dp.supervise(node, control, boot.heartbeat_interval, stop)
        if dashboard is not None and not dashboard.done():
            dashboard.cancel()
        if why == "closed":
            await dp.close_node(node)  # dask may still be closing: let it finish (bounded)
            problem = dp.unexpected_close(node)
            if problem is None:
                logger.info("dask %s closed as part of the cluster's shutdown", node.role)
                return 0
            logger.error("%s", problem)
            await _report_failure(control, problem)
            return 1
        logger.info("closing dask %s (%s)", node.role, "stop requested" if why == "stop" else why)
        ship.send_soon()  # a SIGTERM is the VM powering off: its grace is counted
        await dp.close_node(node)
        logger.info("dask %s closed; agent exiting", node.role)
        return EXIT_UNREACHABLE if why == "unreachable" else 0
    except Exception as exc:
        logger.exception("overcast-agent failed")
        await _report_failure(control, f"{type(exc).__name__}: {exc}")
        if node is not None:
            await _close_quietly(node)
        return 1
    finally:
        ship_timer.cancel()
        await control.aclose()


async def _start(boot: BootConfig, ident: InstanceIdentity, control: ControlPlane) -> Node:
    loop = asyncio.get_running_loop()
    # Import distributed (~0.5 s of CPU) in a thread while the TLS request is on the wire.
    calls: list[Awaitable[Any]] = [
        control.tls(),
        loop.run_in_executor(None, importlib.import_module, "overcast.agent.dask_process"),
    ]
    if boot.role == "scheduler":  # its dashboard's HTTPS certificate, naming this VM's addresses
        calls.append(_dashboard_cert(control, ident))
    tls, dp, *dashboard_tls = await asyncio.gather(*calls)
    logship.route_distributed_logs()
    security = dp.node_security(tls)
    if boot.role == "scheduler":
        node = await dp.start_scheduler(boot, ident, security, dashboard_tls[0])
    else:
        logger.info("waiting for the scheduler's address")
        address = await dp.wait_for_scheduler(control)
        node = await dp.start_worker(boot, ident, security, address)
    try:
        await control.ready(node.address, node.dashboard_address, node.internal_address)
    except BaseException:
        await _close_quietly(node)
        raise
    logger.info("reported ready: %s", node.address)
    return node


async def _dashboard_cert(control: ControlPlane, ident: InstanceIdentity) -> tuple[str, str] | None:
    """A certificate naming this VM's addresses; without one (a control plane that does not
    issue them) the dashboard still serves HTTPS, with the node certificate."""
    ips = list(dict.fromkeys(ip for ip in (ident.local_ipv4, ident.public_ipv4) if ip))
    try:
        return await control.dashboard_cert(ips)
    except ControlPlaneError as exc:
        logger.warning("no dashboard certificate (%s); using the node certificate", exc)
        return None


async def _unless_stopped(aw: Awaitable[T], stop: asyncio.Event) -> T | None:
    """Await ``aw`` unless ``stop`` is set first (then cancel it and return None)."""
    task = asyncio.ensure_future(aw)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return None
    finally:
        stopped.cancel()


async def _report_failure(control: ControlPlane, reason: str) -> None:
    try:
        await control.failed(reason[:300])
    except Exception as exc:  # noqa: BLE001 - best effort: the instance is failing anyway
        logger.warning("could not report the failure to the control plane: %s", exc)


async def _close_quietly(node: Any) -> None:
    from overcast.agent import dask_process as dp

    try:
        await dp.close_node(node, timeout=10)
    except Exception as exc:  # noqa: BLE001
        logger.warning("error while closing dask: %s", exc)


if __name__ == "__main__":
    main()
