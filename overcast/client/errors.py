"""Exceptions the client raises. Each message says what to do next; none contains a token."""

from __future__ import annotations


class OvercastError(Exception):
    """Base class of every overcast client error."""


class NotConfigured(OvercastError):
    """No server or token configured, or the token was refused."""


class ServerUnreachable(NotConfigured):
    """The control plane does not answer (it is not running, or the URL is wrong)."""


class ApiError(OvercastError):
    """The control plane refused a request (4xx) or failed (5xx); `status` is the HTTP code."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class NotFound(ApiError):
    """404: no such cluster or account (or not visible to you)."""


class ClusterStartError(OvercastError):
    """The cluster went to state `error`, or did not start within the start timeout."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason
