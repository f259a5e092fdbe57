"""Small helpers the option/lifetime e2e tests share: API reads, boto3 read-backs, waiting."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from overcast import tags


def api(stack, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, f"{stack.url}/api/v1{path}",
                             headers={"Authorization": f"Bearer {stack.token}"}, timeout=10,
                             **kwargs)
    response.raise_for_status()
    return response.json()


def cluster_info(stack, name: str) -> dict:
    return api(stack, "GET", f"/accounts/{stack.account}/clusters/{name}")


def instances(ec2, cluster_id: int) -> list[dict]:
    found = ec2.describe_instances(
        Filters=[{"Name": f"tag:{tags.CLUSTER}", "Values": [str(cluster_id)]}])["Reservations"]
    return [i for r in found for i in r["Instances"]]


def role(instance: dict) -> str:
    return tags.from_aws(instance["Tags"])[tags.ROLE]


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def local_cloud(stack, method: str, path: str, body: dict | None = None) -> Any:
    """The local cloud's control API (fault injection, spot interruptions)."""
    response = httpx.request(method, f"{stack.endpoint}/_overcast/{path}", json=body, timeout=10)
    response.raise_for_status()
    return response.json()
