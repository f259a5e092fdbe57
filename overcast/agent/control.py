"""The agent's side of "Agent <-> control plane" (docs/architecture.md): bearer cluster token,
retries with backoff on connection errors and 5xx (the control plane may restart while
clusters keep running). The token is never logged: it lives only in the client's headers.
Instance routes also carry the VM's signed identity document (`identity`), which proves to
the control plane which instance is calling; the scheduler address is a long-poll.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import random
import ssl
import time
from dataclasses import dataclass
from typing import Any

import httpx

from overcast.bootconfig import BootConfig

logger = logging.getLogger("overcast.agent.control")

# httpx logs every request at INFO; that would flood the CloudWatch stream with heartbeats.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

RETRY_STATUSES = {500, 502, 503, 504}
LONG_POLL = 25.0  # seconds the control plane holds a scheduler-address request
DOCUMENT_HEADER = "X-Overcast-Identity-Document"
SIGNATURE_HEADER = "X-Overcast-Identity-Signature"


def identity_headers(document: str, signature: str) -> dict[str, str]:
    """The headers proving which instance calls: the IMDS's identity document (base64: it
    spans lines) and its signature, as the IMDS serves them."""
    return {DOCUMENT_HEADER: base64.b64encode(document.encode()).decode(),
            SIGNATURE_HEADER: "".join(signature.split())}


@functools.lru_cache(maxsize=4)
def _ssl_context(ca_pem: str | None = None) -> ssl.SSLContext:
    """Built once per process (loading the CA bundle costs ~40 ms); the local cloud's fork
    server builds it before forking, so its VMs get it for free. With `ca_pem` (the boot
    document's `control_plane_ca`), that CA is trusted as well as the system's."""
    context = httpx.create_ssl_context()
    if ca_pem:
        context.load_verify_locations(cadata=ca_pem)
    return context


class ControlPlaneError(RuntimeError):
    """The control plane answered, with an error that retrying will not fix (4xx)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"control plane answered {status}: {message}")
        self.status = status


@dataclass(frozen=True)
class NodeTLS:
    ca_cert: str
    cert: str
    key: str

    def __repr__(self) -> str:  # never print the key
        return "NodeTLS(<redacted>)"


class ControlPlane:
    def __init__(
        self,
        boot: BootConfig,
        instance_id: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        identity: tuple[str, str] | None = None,
    ) -> None:
        """`identity`: (document, signature) from the IMDS (`IMDSClient.identity()`), sent
        on the instance routes."""
        self.cluster_id = boot.cluster_id
        self.instance_id = instance_id
        self._identity = identity_headers(*identity) if identity else {}
        self._timeout = timeout
        # The watchdog's clock: when the control plane last answered (any HTTP answer).
        self.last_answer = time.monotonic()
        self.shutdown_after_unreachable = boot.shutdown_after_unreachable
        self._http = httpx.AsyncClient(
            verify=_ssl_context(boot.control_plane_ca),
            base_url=boot.control_plane.rstrip("/"),
            headers={"Authorization": f"Bearer {boot.cluster_token}"},
            timeout=timeout,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- plumbing ---------------------------------------------------------------------------
    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        retry_for: float = 300.0,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One call, retried on connection errors/timeouts/5xx for up to ``retry_for`` seconds
        with jittered exponential backoff. 4xx raises ControlPlaneError at once."""
        url = f"/api/v1/agent/clusters/{self.cluster_id}{path}"
        headers = self._identity if path.startswith("/instances/") else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + retry_for
        delay = 0.1
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = await self._http.request(method, url, json=body, params=params,
                                                headers=headers,
                                                timeout=timeout or self._timeout)
            except httpx.TransportError as exc:  # connect errors, timeouts, resets
                problem = f"{type(exc).__name__}"
            else:
                self.last_answer = time.monotonic()
                if resp.status_code < 400:
                    return resp.json() if resp.content else None
                if resp.status_code not in RETRY_STATUSES:
                    raise ControlPlaneError(resp.status_code, _detail(resp))
                problem = f"HTTP {resp.status_code}"
            if loop.time() + delay > deadline:
                raise ConnectionError(f"{method} {url}: {problem} (after {attempt} attempts)")
            if self.gave_up():  # the watchdog also ends a boot that waits on a silent plane
                raise ConnectionError(f"{method} {url}: {problem}; no answer from the control "
                                      f"plane for {self.unreachable_for():.0f} s "
                                      "(shutdown_after_unreachable)")
            if attempt in (1, 5) or attempt % 20 == 0:
                logger.warning("%s %s: %s; retrying", method, url, problem)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)

    def unreachable_for(self) -> float:
        """Seconds since the control plane last answered."""
        return time.monotonic() - self.last_answer

    def gave_up(self) -> bool:
        """The watchdog: True once the control plane has been silent for
        `shutdown_after_unreachable` (the VM then powers itself off)."""
        return self.unreachable_for() >= self.shutdown_after_unreachable

    # -- the four routes (+ scheduler address) -----------------------------------------------
    async def tls(self) -> NodeTLS:
        data = await self._call("GET", "/tls")
        return NodeTLS(ca_cert=data["ca_cert"], cert=data["cert"], key=data["key"])

    async def dashboard_cert(self, ips: list[str]) -> tuple[str, str]:
        """(cert, key) PEM for the scheduler's HTTPS dashboard, naming these addresses."""
        data = await self._call("POST", "/dashboard-cert", {"ips": ips})
        return data["cert"], data["key"]

    async def scheduler_address(self, wait: float = 0.0) -> str | None:
        """The scheduler's address, or None. With `wait`, the control plane answers as soon as
        it is known, or after `wait` seconds (a long-poll: no tight polling)."""
        params = {"wait": wait} if wait else None
        data = await self._call("GET", "/scheduler", params=params,
                                timeout=self._timeout + wait) or {}
        # Workers prefer the scheduler's private address when the control plane has it: on EC2,
        # traffic to a public IP leaves the VPC and no longer matches the cluster's
        # security-group-to-itself rule.
        return data.get("internal_address") or data.get("address")

    async def ready(
        self, address: str, dashboard_address: str | None, internal_address: str | None = None
    ) -> None:
        body: dict[str, Any] = {"address": address, "dashboard_address": dashboard_address}
        if internal_address and internal_address != address:
            body["internal_address"] = internal_address  # proposed contract extension
        await self._call("POST", f"/instances/{self.instance_id}/ready", body)

    async def heartbeat(self, metrics: dict[str, Any], *, retry_for: float = 0.0) -> str:
        """Returns the control plane's action, "continue" or "stop". No retry by default: the
        next heartbeat is the retry."""
        data = await self._call(
            "POST", f"/instances/{self.instance_id}/heartbeat", metrics, retry_for=retry_for
        )
        return str((data or {}).get("action", "continue"))

    async def failed(self, reason: str, *, retry_for: float = 10.0) -> None:
        await self._call(
            "POST",
            f"/instances/{self.instance_id}/failed",
            {"reason": reason[:500]},
            retry_for=retry_for,
        )


def _detail(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:200]
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])[:200]
    return str(data)[:200]
