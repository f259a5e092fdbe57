"""The account's cloud backend from Python: run clusters in your own AWS account, or not.

    overcast.set_backend_options(aws_access_key_id="AKIA...", aws_secret_access_key="...")
    overcast.set_backend_options(backend="hosted")   # back to the default

The control plane checks the credentials (long-lived, valid, with overcast's policies) before
it stores anything; a failed check raises `ApiError` with the reason.
"""

from __future__ import annotations

import time
from typing import Any

from overcast.client.api import Api, seg
from overcast.client.errors import OvercastError


def backend_path(slug: str, suffix: str = "") -> str:
    return f"/accounts/{seg(slug)}/backend{suffix}"


def set_backend_options(
    account: str | None = None,
    backend: str = "aws",
    aws_region: str = "us-east-1",
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    aws_session_token: str | None = None,
    aws_role_arn: str | None = None,
    zone: str | None = None,
    firewall: dict[str, Any] | None = None,
    registry_type: str = "ecr",
    registry_username: str | None = None,
    registry_access_token: str | None = None,
    s3_read: list[str] | None = None,
    wait: bool = False,
    timeout: float = 1800.0,
    *,
    api: Api | None = None,
) -> dict[str, Any]:
    """Configure where `account`'s clusters run (admins only); returns the backend document.

    backend="aws": your AWS account, with an IAM user's long-lived keys, or with
    `aws_role_arn` (a role trusting overcast with your account's external id; see `overcast
    setup aws --role`). backend="hosted": the operator's account (the default). With
    `wait=True`, returns once the setup in your account is ready (raises if it fails).

    `s3_read`: the S3 buckets your clusters' VMs may read with their instance role (none by
    default; public-read data needs no grant with `storage_options={"anon": True}`).
    """
    api = api or Api()
    slug = api.account(account)
    if backend == "hosted" and s3_read is None:
        return api.request("DELETE", backend_path(slug))
    if backend == "hosted":
        return api.request("PUT", backend_path(slug),
                           json={"backend": "hosted", "s3_read": s3_read})
    body = {"backend": backend, "aws_region": aws_region,
            "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key,
            "aws_session_token": aws_session_token, "aws_role_arn": aws_role_arn,
            "zone": zone, "firewall": firewall, "registry_type": registry_type,
            "registry_username": registry_username,
            "registry_access_token": registry_access_token, "s3_read": s3_read}
    doc = api.request("PUT", backend_path(slug),
                      json={k: v for k, v in body.items() if v is not None})
    return wait_for_backend(slug, timeout, api=api) if wait else doc


def get_backend_options(account: str | None = None, *, api: Api | None = None) -> dict:
    """The account's backend: kind, region, state, masked key id and resources."""
    api = api or Api()
    return api.get(backend_path(api.account(account)))


def wait_for_backend(account: str | None = None, timeout: float = 1800.0, *,
                     api: Api | None = None, interval: float = 1.0) -> dict[str, Any]:
    """Poll until the backend is ready (or hosted again after a teardown); raise on error."""
    api = api or Api()
    slug = api.account(account)
    deadline = time.monotonic() + timeout
    while True:
        doc = api.get(backend_path(slug))
        if doc["state"] == "ready":
            return doc
        if doc["state"] == "error":
            raise OvercastError(f"Setting up your AWS account failed: {doc.get('reason')}")
        if time.monotonic() > deadline:
            raise OvercastError(f"The backend is still {doc['state']} after {timeout:.0f} s; "
                                "see `overcast notifications`.")
        time.sleep(interval)
