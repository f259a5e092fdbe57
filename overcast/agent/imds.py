"""A small client of the EC2 instance metadata service (IMDSv2), stdlib only.

The base URL is botocore's own setting (``AWS_EC2_METADATA_SERVICE_ENDPOINT``), so the local
runner's per-instance IMDS (``http://127.0.0.1:<port>/<instance id>``) and real EC2 both work.
urllib rather than httpx: these are a handful of loopback/link-local GETs at boot, and the stdlib
adds no import time.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_TTL = "21600"


class IMDSError(RuntimeError):
    pass


@dataclass(frozen=True)
class InstanceIdentity:
    instance_id: str
    local_ipv4: str
    public_ipv4: str | None  # None when the VM has no public address (private subnet)
    availability_zone: str | None
    user_data: str
    # The signed instance identity document and its signature: the agent's proof to the
    # control plane of which instance it is (one user data serves a whole batch).
    document: str | None = None
    signature: str | None = None


class IMDSClient:
    def __init__(
        self,
        endpoint: str | None = None,
        *,
        timeout: float = 2.0,
        retry_for: float = 10.0,
    ) -> None:
        base = endpoint or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or DEFAULT_ENDPOINT
        # botocore joins base and path with "/"; do the same (base may carry a path prefix).
        self.base = base.rstrip("/") + "/"
        self.timeout = timeout
        self.retry_for = retry_for
        self._token: str | None = None
        self._token_fetched = False

    # -- plumbing -------------------------------------------------------------------------
    def _request(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
        """One request; returns (status, body). Retries connection errors and 5xx briefly
        (the IMDS may come up a moment after the agent on a booting VM)."""
        url = self.base + path
        deadline = time.monotonic() + self.retry_for
        delay = 0.02
        while True:
            req = urllib.request.Request(url, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return resp.status, resp.read().decode()
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    return exc.code, ""
                err: Exception = exc
            except (urllib.error.URLError, OSError) as exc:
                err = exc
            if time.monotonic() + delay > deadline:
                raise IMDSError(f"{method} {url}: {err}") from err
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _fetch_token(self) -> None:
        if self._token_fetched:
            return
        status, body = self._request(
            "PUT", "latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": TOKEN_TTL}
        )
        # 403/404/405: an IMDSv1-only service; go on without a token.
        self._token = body.strip() if status == 200 else None
        self._token_fetched = True

    def get(self, path: str, *, required: bool = True) -> str | None:
        """GET ``latest/<path>``. A 404 is None when not required, an error otherwise."""
        self._fetch_token()
        headers = {"X-aws-ec2-metadata-token": self._token} if self._token else {}
        status, body = self._request("GET", f"latest/{path}", headers)
        if status == 401 and self._token:
            # The token expired (agents live long): get a fresh one once.
            self._token_fetched = False
            self._fetch_token()
            headers = {"X-aws-ec2-metadata-token": self._token} if self._token else {}
            status, body = self._request("GET", f"latest/{path}", headers)
        if status == 200:
            return body
        if status == 404 and not required:
            return None
        raise IMDSError(f"IMDS GET latest/{path}: HTTP {status}")

    # -- what the agent needs ---------------------------------------------------------------
    def user_data(self) -> str:
        return self.get("user-data") or ""

    def meta(self, name: str, *, required: bool = True) -> str | None:
        value = self.get(f"meta-data/{name}", required=required)
        return value.strip() if value is not None else None

    def identity(self) -> InstanceIdentity:
        ident = InstanceIdentity(
            instance_id=self.meta("instance-id") or "",
            local_ipv4=self.meta("local-ipv4") or "",
            public_ipv4=self.meta("public-ipv4", required=False) or None,
            availability_zone=self.meta("placement/availability-zone", required=False),
            user_data=self.user_data(),
            document=self.get("dynamic/instance-identity/document", required=False),
            signature=(self.get("dynamic/instance-identity/signature", required=False)
                       or "").strip() or None,
        )
        if not ident.instance_id or not ident.local_ipv4:
            raise IMDSError("IMDS returned an empty instance-id or local-ipv4")
        return ident
