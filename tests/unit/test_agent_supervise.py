"""The agent's heartbeat/stop loop, with fakes for dask and the control plane."""

from __future__ import annotations

import asyncio

from distributed import Scheduler
from distributed.core import Status

from overcast.agent.control import ControlPlaneError
from overcast.agent.dask_process import Node, scheduler_metrics, supervise, unexpected_close


class FakeServer:
    def __init__(self) -> None:
        self.status = Status.running
        self.close_reason: str | None = None
        self._done = asyncio.Event()

    async def finished(self) -> None:
        await self._done.wait()

    def die(self, reason: str) -> None:
        self.close_reason = reason
        self.status = Status.closed
        self._done.set()


class FakeControl:
    def __init__(self, answers: list) -> None:
        self.answers = answers
        self.beats: list[dict] = []

    async def heartbeat(self, metrics: dict) -> str:
        self.beats.append(metrics)
        answer = self.answers.pop(0) if self.answers else "continue"
        if isinstance(answer, Exception):
            raise answer
        return answer

    def gave_up(self) -> bool:  # the watchdog: tests/unit/test_agent_watchdog.py
        return False


def _node(server: FakeServer, role: str = "worker") -> Node:
    return Node(
        server=server,
        role=role,
        address="tls://a:1",
        dashboard_address=None,
        internal_address="tls://a:1",
    )  # type: ignore[arg-type]


def test_stop_after_errors_and_continues() -> None:
    async def main():
        control = FakeControl(
            [ConnectionError("down"), ControlPlaneError(502, "x"), "continue", "stop"]
        )
        why = await supervise(_node(FakeServer()), control, 0.01, asyncio.Event())
        return why, control.beats

    why, beats = asyncio.run(main())
    assert why == "stop" and beats == [{}, {}, {}, {}]


def test_signal_interrupts_a_hanging_heartbeat() -> None:
    class Hanging(FakeControl):
        async def heartbeat(self, metrics: dict) -> str:
            await asyncio.sleep(3600)
            return "continue"

    async def main():
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        return await asyncio.wait_for(supervise(_node(FakeServer()), Hanging([]), 1, stop), 5)

    assert asyncio.run(main()) == "signal"


def test_dask_closing_by_itself() -> None:
    async def main(reason: str):
        server = FakeServer()
        asyncio.get_running_loop().call_later(0.05, server.die, reason)
        node = _node(server)
        why = await asyncio.wait_for(supervise(node, FakeControl([]), 10, asyncio.Event()), 5)
        return why, unexpected_close(node)

    assert asyncio.run(main("scheduler-close")) == ("closed", None)
    why, problem = asyncio.run(main("worker-handle-scheduler-connection-broken"))
    assert why == "closed" and "connection-broken" in problem


def test_scheduler_metrics() -> None:
    async def main():
        async with Scheduler(host="127.0.0.1", port=0, dashboard_address=":0") as s:
            await asyncio.sleep(0.6)  # check_idle runs every 250 ms
            return scheduler_metrics(s)

    m = asyncio.run(main())
    assert m["workers"] == 0 and m["tasks"] == 0 and m["clients"] == 0
    assert m["idle_seconds"] > 0.3
