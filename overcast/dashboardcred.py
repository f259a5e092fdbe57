"""The credential of a cluster's dask dashboard, shared by the control plane and the agent.

The dashboard token is derived from the cluster token (HMAC-SHA256 under a fixed label), so
the scheduler's agent computes it from its boot config and the control plane from the cluster
token it keeps encrypted: nothing new to store or ship, and the token is as secret as its
source. It is one-way: a leaked dashboard link does not give the agent routes' credential.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from urllib.parse import urlsplit, urlunsplit

LABEL = b"overcast dask dashboard v1"
# The query parameter of the link (as Jupyter's `?token=`) and the cookie it is traded for.
QUERY_PARAM = "token"
COOKIE = "overcast_dashboard"
_TOKEN_IN_TEXT = re.compile(r"(token=)[^&\s\"']+")


def dashboard_token(cluster_token: str) -> str:
    digest = hmac.new(cluster_token.encode(), LABEL, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def tokens_equal(given: str | None, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


def link_with_token(link: str, token: str) -> str:
    """`https://addr:8787/status` -> `https://addr:8787/status?token=...`."""
    parts = urlsplit(link)
    query = f"{parts.query}&" if parts.query else ""
    return urlunsplit(parts._replace(query=f"{query}{QUERY_PARAM}={token}"))


def redact(text: str) -> str:
    """Any `token=...` in a text (a URL in a log line) replaced by `token=[redacted]`."""
    return _TOKEN_IN_TEXT.sub(r"\1[redacted]", text)
