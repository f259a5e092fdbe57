"""Load on a real control plane: concurrent listers and retried, duplicated creates, with
/api/v1/health timed from a thread of its own. Used by tests/e2e/test_api_load.py (which
asserts on the outcome) and bench/api_load.py, bench/scale.py (which print the figures).

The server is a dedicated process on loopback whose AWS endpoint is a closed loopback port:
the clusters it is asked for never boot (its reconciler retries, as during an AWS outage),
so a hundred creates cost no schedulers.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from overcast.client.api import Api
from overcast.server.bootstrap import ensure_first_user
from overcast.store.db import Database
from tests.e2e.stack import Proc, cli, free_port, wait_for


def closed_port() -> int:
    with socket.socket() as s:  # bound, then closed: connections to it are refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiServer:
    """`overcast server` on 127.0.0.1 with its own home, user and token; no local cloud."""

    def __init__(self, home: Path, env: dict[str, str], database_url: str | None = None) -> None:
        self.home = home
        self.database_url = database_url or f"sqlite:///{home / 'overcast.db'}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "OVERCAST_HOME": str(home), "PYTHONUNBUFFERED": "1",
                    "AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}",
                    "AWS_ACCESS_KEY_ID": "load-test", "AWS_SECRET_ACCESS_KEY": "load-test",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1",
                    "OVERCAST_DATABASE_URL": self.database_url}
        self.proc: Proc | None = None
        self.slug = self.token = ""

    def start(self) -> None:
        db = Database(self.database_url)
        self.slug, self.token = ensure_first_user("load-user", db)
        db.engine.dispose()
        self.proc = Proc("api-server", cli("server", "--port", str(self.port)), self.env,
                         self.home)
        wait_for(lambda: httpx.get(self.url + "/api/v1/health", timeout=2).status_code == 200,
                 60, "the control plane", self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


class HealthProbe(threading.Thread):
    """GET /api/v1/health every 50 ms from its own thread and connection; keeps latencies
    (a failed or timed-out call counts as infinitely slow)."""

    def __init__(self, url: str) -> None:
        super().__init__(name="health-probe", daemon=True)
        self.url = url + "/api/v1/health"
        self.latencies: list[float] = []
        self._done = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._done.is_set():
                start = time.perf_counter()
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.latencies.append(time.perf_counter() - start if ok else float("inf"))
                self._done.wait(0.05)

    def stop(self) -> None:
        self._done.set()
        self.join(10)


_TLS = httpx.create_ssl_context()


class Counting(httpx.AsyncHTTPTransport):
    """Counts every HTTP status the server sent (retried ones included)."""

    def __init__(self, statuses: Counter) -> None:
        # One TLS context for all: making one per client (~65 ms of CPU on a busy 2-core
        # machine, in this process's event loop) stalled every timed request in the load.
        super().__init__(verify=_TLS)
        self.statuses = statuses

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        self.statuses[response.status_code] += 1
        return response


@dataclass
class LoadResult:
    statuses: Counter = field(default_factory=Counter)
    created: dict[str, list[int]] = field(default_factory=dict)  # key -> ids answered
    create_errors: list[str] = field(default_factory=list)
    list_seconds: list[float] = field(default_factory=list)
    health_seconds: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def p99(self, values: list[float]) -> float:
        if len(values) < 2:
            return max(values, default=0.0)
        return statistics.quantiles(values, n=100)[98]


async def _create(server: ApiServer, result: LoadResult, name: str, key: str) -> None:
    api = Api(server.url, server.token, timeout=10,
              async_transport=Counting(result.statuses))
    try:  # the same request and key as overcast.Cluster sends, with its retries
        info = await api.arequest("POST", Api.clusters_path(server.slug),
                                  json={"name": name, "n_workers": 1},
                                  headers={"Idempotency-Key": key}, retries=5)
        result.created.setdefault(key, []).append(info["id"])
    except Exception as exc:  # noqa: BLE001 - counted and reported by the caller
        result.create_errors.append(f"{name}: {exc}")
    finally:
        await api.aclose()


async def _lister(server: ApiServer, result: LoadResult, until: asyncio.Event,
                  at_least: int, interval: float) -> None:
    headers = {"Authorization": f"Bearer {server.token}"}
    async with httpx.AsyncClient(transport=Counting(result.statuses), timeout=30) as client:
        done = 0
        while done < at_least or not until.is_set():
            start = time.perf_counter()
            r = await client.get(server.url + "/api/v1" + Api.clusters_path(server.slug),
                                 headers=headers)
            if r.status_code == 200:
                result.list_seconds.append(time.perf_counter() - start)
            done += 1
            if interval:  # a poller's pause (else back to back: as much load as one process makes)
                await asyncio.sleep(interval)


async def _raw_lister(server: ApiServer, result: LoadResult, until: asyncio.Event,
                      at_least: int, interval: float) -> None:
    """A lister speaking HTTP/1.1 itself on one keep-alive connection: ~10x less of this
    process's CPU per request than httpx, so 50 of them in one process time the server,
    not this process's own queue (bench only; the load test keeps httpx's listers)."""
    path = "/api/v1" + Api.clusters_path(server.slug)
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Authorization: Bearer {server.token}\r\n\r\n").encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        done = 0
        while done < at_least or not until.is_set():
            start = time.perf_counter()
            writer.write(request)
            status = int((await reader.readline()).split()[1])
            length = None
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length is None:
                raise RuntimeError("the server answered without Content-Length")
            await reader.readexactly(length)
            result.statuses[status] += 1
            if status == 200:
                result.list_seconds.append(time.perf_counter() - start)
            done += 1
            if interval:
                await asyncio.sleep(interval)
    finally:
        writer.close()


async def run_load(server: ApiServer, creates: int = 100, duplicates: int = 20,
                   listers: int = 50, lists_each: int = 5,
                   list_interval: float = 0.0, raw_listers: bool = False) -> LoadResult:
    """`creates` clusters, `duplicates` of them sent twice at once (a retry racing its
    original), while `listers` clients list clusters (each waiting `list_interval` seconds
    between lists, or none; `raw_listers`: see _raw_lister); health is timed throughout."""
    result = LoadResult()
    probe = HealthProbe(server.url)
    # 150 clients share this process's GIL with the probe: hand it over every 1 ms (not 5),
    # so the probe measures the server rather than this process's own queue.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.001)
    probe.start()
    start = time.perf_counter()
    try:
        keys = [str(uuid.uuid4()) for _ in range(creates)]
        jobs = [_create(server, result, f"load-{i}", key) for i, key in enumerate(keys)]
        jobs += [_create(server, result, f"load-{i}", keys[i]) for i in range(duplicates)]
        done = asyncio.Event()
        lister = _raw_lister if raw_listers else _lister
        list_jobs = [asyncio.ensure_future(lister(server, result, done, lists_each,
                                                         list_interval))
                     for _ in range(listers)]
        await asyncio.gather(*jobs)
        done.set()
        await asyncio.gather(*list_jobs)
    finally:
        result.seconds = time.perf_counter() - start
        probe.stop()
        sys.setswitchinterval(interval)
        result.health_seconds = probe.latencies
    return result


async def delete_all(server: ApiServer, names: list[str], parallel: int = 20) -> Counter:
    statuses: Counter = Counter()
    gate = asyncio.Semaphore(parallel)
    api = Api(server.url, server.token, timeout=30, async_transport=Counting(statuses))

    async def delete(name: str) -> None:
        async with gate:
            await api.arequest("DELETE", Api.clusters_path(server.slug, name), retries=3)

    try:
        await asyncio.gather(*(delete(n) for n in names))
    finally:
        await api.aclose()
    return statuses
