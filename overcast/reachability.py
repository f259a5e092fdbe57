"""Can a VM reach the control plane at its public URL? Decided from addresses alone.

VMs dial the control plane at `overcast server --public-url URL` (the boot document's
`control_plane`). Before launching anything the control plane refuses a URL its VMs could not
reach, instead of letting every VM time out later. The rules are about addresses, not about
where overcast runs:

- the URL must be http(s) with a host, and not an unspecified address (0.0.0.0, ::);
- a loopback host (127.0.0.0/8, ::1, localhost) is reachable from a VM only when the cloud's
  EC2 endpoint is itself on loopback: the VMs then run on this same host (as in the local
  cloud). Real EC2 (ec2.<region>.amazonaws.com) with a loopback URL is refused.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

SETTING = "--public-url"
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def unreachable_reason(public_url: str, ec2_endpoint: str | None) -> str | None:
    """Why VMs of the cloud at `ec2_endpoint` could not reach `public_url`; None if they can."""
    parts = urlsplit(public_url)
    host = _host(public_url)
    if parts.scheme not in ("http", "https") or not host:
        return (f"The control plane's public URL {public_url!r} is not an http(s) URL with a "
                f"host; start the server with `overcast server {SETTING} URL`.")
    if _is_unspecified(host):
        return (f"The control plane's public URL {public_url} names no address a VM can dial "
                f"({host}); start the server with `overcast server {SETTING} URL`, the "
                "address VMs use to reach it.")
    if is_loopback(host) and not is_loopback(_host(ec2_endpoint or "")):
        where = ec2_endpoint or "AWS"
        return (f"The control plane's public URL {public_url} is a loopback address, which "
                f"VMs launched through {where} cannot reach. Start the server with "
                f"`overcast server {SETTING} URL` (an https address VMs in the VPC can reach; "
                "see docs/boot-path.md).")
    return None


def cloud_endpoint(conn: object) -> str | None:
    """The EC2 endpoint a provider connection talks to, if it can say (an AWS context's
    client knows it); None when it cannot (e.g. a test provider): then nothing is refused."""
    client = getattr(conn, "client", None)
    if client is None:
        return None
    return client("ec2").meta.endpoint_url


def refusal(public_url: str, conn: object) -> str | None:
    """unreachable_reason() for a provider connection whose endpoint is known."""
    if getattr(conn, "client", None) is None:
        return None
    return unreachable_reason(public_url, cloud_endpoint(conn))
