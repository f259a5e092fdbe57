"""The instance-side watchdog: a VM's agent gives up (and its VM powers off) once the control
plane has not answered for `shutdown_after_unreachable`, and not while it answers."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from overcast.agent.control import ControlPlane
from overcast.agent.dask_process import supervise
from overcast.bootconfig import BootConfig
from tests.unit.test_agent_supervise import FakeServer, _node

pytestmark = pytest.mark.timeout(30)


def _boot(after: float) -> BootConfig:
    return BootConfig(control_plane="http://control.test:8600", cluster_id=1, cluster_token="t",
                      role="worker", log_group="acme", region="us-east-1",
                      shutdown_after_unreachable=after)


def _supervise(handler, after: float, timeout: float) -> str | None:
    async def main():
        control = ControlPlane(_boot(after), "i-1", transport=httpx.MockTransport(handler))
        try:
            return await asyncio.wait_for(
                supervise(_node(FakeServer()), control, 0.02, asyncio.Event()), timeout)
        except TimeoutError:
            return None
        finally:
            await control.aclose()

    return asyncio.run(main())


def test_unreachable_control_plane_stops_the_vm_after_the_setting() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    assert _supervise(down, after=0.3, timeout=10) == "unreachable"


def test_a_control_plane_that_answers_errors_is_not_unreachable() -> None:
    def failing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"detail": "restarting"})

    # 5xx answers are retried but they are answers: the VM keeps running.
    assert _supervise(failing, after=0.3, timeout=1.0) is None


def test_default_is_twenty_minutes() -> None:
    assert _boot(BootConfig.__dataclass_fields__["shutdown_after_unreachable"].default) \
        .shutdown_after_unreachable == 20 * 60


def test_a_booting_vm_stops_waiting_too() -> None:
    """A worker still waiting for its TLS material or its scheduler (calls retried for
    minutes) gives up after the setting as well, so its VM powers off."""
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async def main() -> tuple[Exception, float]:
        control = ControlPlane(_boot(0.3), "i-1", transport=httpx.MockTransport(down))
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await control.tls()  # retried for 300 s unless the watchdog says otherwise
        except ConnectionError as exc:
            return exc, loop.time() - started
        finally:
            await control.aclose()
        raise AssertionError("tls() answered")

    exc, took = asyncio.run(main())
    assert "shutdown_after_unreachable" in str(exc) and took < 5
