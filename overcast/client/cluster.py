"""`overcast.Cluster`: a Dask cluster run by the overcast control plane.

Follows distributed's SpecCluster for sync/async: the constructor starts an event loop
thread (unless called from a running loop) and runs `_start` on it; `await Cluster(...,
asynchronous=True)` runs `_start` in the caller's loop. `_start` asks the control plane
for the cluster, waits for it, then connects to the scheduler over TLS with the
cluster's client certificate, so `distributed.Client(cluster)` works.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
import uuid
from typing import Any

from dask.utils import typename
from distributed.core import Status, rpc
from distributed.deploy import Cluster as _DaskCluster
from distributed.utils import Log, Logs
from tornado.ioloop import IOLoop, PeriodicCallback

from overcast import options
from overcast.client import config
from overcast.client.api import Api
from overcast.client.display import html_repr, text_repr
from overcast.client.errors import ApiError, ClusterStartError, NotFound, ServerUnreachable
from overcast.client.logs import format_events
from overcast.client.progress import StartProgress
from overcast.client.software import software_request
from overcast.client.teardown import Teardown
from overcast.client.validate import whole_number, workers_to_wait_for

logger = logging.getLogger("overcast.client")

ENDED = ("stopping", "stopped", "error")
LIVE_INSTANCE = ("requested", "launched", "booting", "ready")
CREATE_RETRIES = 5  # tries after the first: ~15 s of backoff in all (overcast.client.api)


class Cluster(Teardown, _DaskCluster):
    """A Dask cluster on AWS (or the local cloud), managed by the overcast control plane.

    >>> cluster = overcast.Cluster(n_workers=4)          # doctest: +SKIP
    >>> client = distributed.Client(cluster)             # doctest: +SKIP

    `Cluster(name="x")` reattaches to the running cluster "x" if there is one, else
    creates it. Defaults come from dask config `overcast.*` (see overcast/overcast.yaml).
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        n_workers: int | None = None,
        account: str | None = None,
        backend_options: dict[str, Any] | None = None,
        worker_gpu: int | None = None,
        scheduler_vm_types: list[str] | None = None,
        worker_vm_types: list[str] | None = None,
        idle_timeout: str | None = None,
        no_client_timeout: str | None = None,
        software: str | None = None,
        wait_for_workers: bool | float | None = None,
        start_timeout: str | float | None = None,
        shutdown_on_close: bool = True,
        progress: str | bool | None = None,
        server: str | None = None,
        token: str | None = None,
        api: Api | None = None,
        asynchronous: bool = False,
        loop: IOLoop | None = None,
        quiet: bool = False,
        scheduler_sync_interval: float = 1,
    ):
        if loop is None and asynchronous:
            loop = IOLoop.current()
        # Api() raises NotConfigured before any thread starts; `api` is for tests.
        self._api = api or Api(server, token)
        self._requested_name = name
        self._account = account
        self._n_workers = whole_number(config.get("n-workers", n_workers), "n_workers")
        # One key per Cluster object, resent on every retry of the create: the control plane
        # makes one cluster per key, however often the request reaches it.
        self._idempotency_key = str(uuid.uuid4())
        self._create_sent = False
        self._options = {
            # The keyword replaces overcast.backend-options whole (the config is its default
            # value); keys given in neither come from the account, then overcast's defaults.
            "backend_options": dict(config.get("backend-options", backend_options) or {}),
            "worker_gpu": config.get("worker-gpu", worker_gpu),
            "scheduler_vm_types": config.get("scheduler-vm-types", scheduler_vm_types),
            "worker_vm_types": config.get("worker-vm-types", worker_vm_types),
            "idle_timeout": config.get("idle-timeout", idle_timeout),
            "no_client_timeout": config.get("no-client-timeout", no_client_timeout),
        }
        for what in ("idle_timeout", "no_client_timeout"):  # "" or "1e400": refused here
            if self._options[what] is not None:
                options.check_duration(self._options[what], what)
        # None: package sync (the client's installed packages); a name: that environment.
        self._software = software
        self._wait_for = workers_to_wait_for(config.get("wait-for-workers", wait_for_workers),
                                             self._n_workers)
        self._start_timeout = config.seconds("start-timeout", start_timeout)
        if progress is False or quiet:
            progress = "none"
        self._progress_mode = str(config.get("progress", progress) or "auto")
        self.shutdown_on_close = shutdown_on_close
        self.security = None
        self._info: dict[str, Any] = {}
        self._created = False
        self._abandon_task: asyncio.Future | None = None
        super().__init__(asynchronous=asynchronous, loop=loop, quiet=quiet,
                         name=name or "(starting)",
                         scheduler_sync_interval=scheduler_sync_interval)
        self._asynchronous = asynchronous

        if not self.called_from_running_loop:
            self._loop_runner.start()
            try:
                self.sync(self._start)
            except BaseException:
                # Also on Ctrl-C: remove what we created, so nothing is left running.
                try:
                    self.sync(self._abandon, callback_timeout=30)
                except BaseException as exc:  # noqa: BLE001 - best effort; the start error matters
                    logger.warning("could not delete cluster %s: %s", self.name, exc)
                self._loop_runner.stop()
                raise

    # -- start ------------------------------------------------------------------------------
    def __await__(self):
        async def _() -> Cluster:
            if self.status == Status.created:
                await self._start()
            return self

        return _().__await__()

    async def _start(self) -> None:
        if self.status == Status.running:
            return
        self.status = Status.starting
        try:
            self._account = await self._api.aaccount(self._account)
            info = await self._find_existing()
            if info is None:
                body = {"name": self._requested_name, "n_workers": self._n_workers,
                        **self._options, **software_request(self._software)}
                self._create_sent = True
                info = await self._api.arequest(
                    "POST", Api.clusters_path(self._account), json=body,
                    headers={"Idempotency-Key": self._idempotency_key}, retries=CREATE_RETRIES)
                self._created = True
                self._note(f"Created cluster {info['name']} in account {self._account}")
            else:
                self._n_workers = int(info.get("n_workers") or 0)
                self._wait_for = min(self._wait_for, self._n_workers)
                self._note(f"Reattached to cluster {info['name']} ({info['state']})")
            self._info = info
            self.name = info["name"]
            info = await self._wait_until_running()
            await self._connect(info)
        except BaseException:
            self.status = Status.failed
            try:
                await self._abandon()
            finally:
                await self._api.aclose()
                self.status = Status.closed  # nothing left to close; no "unclosed" warning
            raise

    async def _find_existing(self) -> dict[str, Any] | None:
        if not self._requested_name:
            return None
        try:
            info = await self._api.arequest(
                "GET", Api.clusters_path(self._account, self._requested_name))
        except NotFound:
            return None
        stopping = info.get("desired_state") == "stopped"  # asked to stop, not yet acted on
        return None if info.get("state") in ENDED or stopping else info

    async def _wait_until_running(self) -> dict[str, Any]:
        info, name = self._info, self.name
        deadline = time.monotonic() + self._start_timeout
        poll = config.seconds("poll-interval")
        hint = (f"See `overcast notifications --cluster {name}` and "
                f"`overcast cluster logs {name}`.")
        with StartProgress(name, self._account, self._progress_mode) as progress:
            while True:
                self._info = info
                progress.update(info)
                state = info.get("state")
                reason = (info.get("reason") or "").rstrip(". ") or None
                if state == "error":
                    raise ClusterStartError(
                        f"Cluster {name} failed to start: {reason or 'no reason given'}. {hint}",
                        reason)
                if state in ("stopping", "stopped"):
                    raise ClusterStartError(
                        f"Cluster {name} was stopped while starting"
                        f"{': ' + reason if reason else ''}. {hint}", reason)
                ready = int(info.get("workers_ready") or 0)
                if state == "running" and info.get("scheduler_address") and ready >= self._wait_for:
                    return info
                if time.monotonic() > deadline:
                    raise ClusterStartError(
                        f"Cluster {name} did not start within {self._start_timeout:.0f} s "
                        f"(state {state}, {ready}/{self._n_workers} workers ready), so it is "
                        f"being stopped. Raise `start_timeout` or `overcast.start-timeout` "
                        f"if it is just slow. {hint}", reason)
                await asyncio.sleep(poll)
                try:
                    info = await self._api.arequest(
                        "GET", Api.clusters_path(self._account, name))
                except (ServerUnreachable, ApiError) as exc:
                    # A restarting control plane is not a failed cluster: keep polling.
                    if isinstance(exc, ApiError) and exc.status < 500:
                        raise
                    logger.debug("polling cluster %s: %s", name, exc)

    async def _connect(self, info: dict[str, Any]) -> None:
        from overcast.security import dask_security

        creds = await self._api.arequest(
            "GET", Api.clusters_path(self._account, self.name, "/credentials"))
        self.security = dask_security(creds["ca_cert"], creds["cert"], creds["key"])
        self.scheduler_comm = rpc(info["scheduler_address"],
                                  connection_args=self.security.get_connection_args("client"))
        self.periodic_callbacks["overcast-refresh"] = PeriodicCallback(self._refresh, 5000)
        await super()._start()  # worker-status subscription, cluster info sync
        # super() copied the scheduler's "cluster-manager-info"; the control plane's name wins.
        self._cluster_info.update(name=info["name"], type=typename(type(self)))
        if self._wait_for:
            # The control plane saw the workers; wait until the scheduler lists them too.
            await self._wait_for_workers(self._wait_for, timeout=max(self._start_timeout, 30))
        await self._check_versions()

    async def _check_versions(self) -> None:
        """Show a table of version differences before any task runs; refuse a major
        mismatch of distributed (skew.VersionSkewError, the cluster is then stopped)."""
        from overcast.client import skew

        # What distributed's Client.get_versions asks: the scheduler, then every worker.
        scheduler = await self.scheduler_comm.versions()
        workers = await self.scheduler_comm.broadcast(msg={"op": "versions"},
                                                      on_error="ignore")
        table = skew.check(skew.client_versions(),
                           {"scheduler": scheduler, "workers": workers or {}})
        if table:
            self._note(table)
            logger.warning("%s", table)
            import sys

            print(table, file=sys.stderr)

    # -- state ------------------------------------------------------------------------------
    async def _refresh(self) -> None:
        try:
            self._info = await self._api.arequest(
                "GET", Api.clusters_path(self._account, self.name))
        except Exception as exc:  # noqa: BLE001 - a missed refresh is harmless
            logger.debug("refreshing cluster %s: %s", self.name, exc)

    def _note(self, message: str) -> None:
        self._cluster_manager_logs.append((datetime.datetime.now(), message))
        logger.info(message)

    @property
    def account(self) -> str | None:
        return self._account

    @property
    def state(self) -> str:
        return self._info.get("state", "pending")

    @property
    def info(self) -> dict[str, Any]:
        """The last Cluster document read from the control plane."""
        return dict(self._info)

    @property
    def dashboard_link(self) -> str:
        return self._info.get("dashboard_link") or super().dashboard_link

    # -- scaling ----------------------------------------------------------------------------
    def scale(self, n: int) -> Any:
        """Ask for `n` workers (returns at once; instances start in the background)."""
        whole_number(n, "n")  # a ValueError here, in the caller's thread, for scale(-1)
        return self.sync(self._scale, n)

    async def _scale(self, n: int, remove: list[str] | None = None) -> None:
        n = whole_number(n, "n")
        self._info = await self._api.arequest(
            "POST", Api.clusters_path(self._account, self.name, "/scale"),
            json={"n_workers": n, **({"remove": list(remove)} if remove else {})})
        self._n_workers = n

    def scale_down(self, workers: Any) -> Any:
        """Called by Adaptive after it retired `workers` (names = instance ids) on the
        scheduler: those very instances go, not whichever the control plane would pick."""
        names = sorted(set(workers))
        return self.sync(self._scale, max(0, self._n_workers - len(names)),
                         [w for w in names if str(w).startswith("i-")])

    def _worker_names(self) -> list[str]:
        """Planned worker names: live worker instance ids, padded up to the desired count.

        These match the scheduler's worker names when the agent names workers by instance
        id; Adaptive only needs the sizes to be right otherwise.
        """
        ids = sorted(i["aws_id"] for i in self._info.get("instances", [])
                     if i.get("role") == "worker" and i.get("state") in LIVE_INSTANCE
                     and i.get("aws_id"))[: self._n_workers]
        return ids + [f"pending-{k}" for k in range(self._n_workers - len(ids))]

    @property
    def plan(self) -> set[str]:
        return set(self._worker_names())

    @property
    def requested(self) -> set[str]:
        return set(self._worker_names())

    # -- logs -------------------------------------------------------------------------------
    def get_logs(self, cluster: bool = True, scheduler: bool = True,
                 workers: bool = True) -> Any:
        """Logs of every instance (from CloudWatch via the control plane), by instance id."""
        return self.sync(self._get_logs, cluster=cluster, scheduler=scheduler, workers=workers)

    async def _get_logs(self, cluster: bool = True, scheduler: bool = True,
                        workers: bool = True) -> Logs:
        await self._refresh()
        data = await self._api.arequest(
            "GET", Api.clusters_path(self._account, self.name, "/logs"))
        roles = {i.get("aws_id"): i.get("role") for i in self._info.get("instances", [])}
        logs = Logs()
        if cluster:
            logs["Cluster"] = Log("\n".join(msg for _, msg in self._cluster_manager_logs))
        streams = (data or {}).get("streams", {})
        for iid in sorted(streams, key=lambda k: (roles.get(k) != "scheduler", k)):
            role = roles.get(iid)
            if (role == "scheduler" and not scheduler) or (role == "worker" and not workers):
                continue
            logs[iid] = Log(format_events(streams[iid]))
        return logs

    # -- close ------------------------------------------------------------------------------
    def close(self, timeout: float | None = None) -> Any:
        aw = super().close(timeout)
        if not self.asynchronous:
            self._loop_runner.stop()
        return aw

    async def _close(self) -> None:
        if self.status == Status.closed:
            return
        await super()._close()  # stop adaptive and comms before the scheduler goes away
        try:
            if self.shutdown_on_close and self._info.get("name"):
                await self._delete(wait=True)
        finally:
            await self._api.aclose()

    # -- display ----------------------------------------------------------------------------
    def __repr__(self) -> str:
        return text_repr(self.name, self._account, self.state, self._info, self._n_workers,
                         self.dashboard_link)

    def _repr_html_(self, cluster_status: Any = None) -> str:
        return html_repr(self.name, self._account, self.state, self._info, self._n_workers,
                         self.dashboard_link)
