"""Helpers for e2e tests that run the local cloud in-process: a fast poll, and os.environ
changes that last for a module- or session-scoped fixture (monkeypatch is function-scoped)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


def wait(check: Callable[[], T], timeout: float = 20.0, what: str = "condition") -> T:
    """check()'s first truthy result, polled every 20 ms; TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.02)
    raise TimeoutError(what)


@contextmanager
def environ(**values: str) -> Iterator[None]:
    """Set environment variables for the block, then put back what was there (or nothing)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
