"""Replace one method of a moto class, once per process.

The local cloud patches moto where it differs from AWS (motofixes.py, motoimages.py). Both the
moto server and unit tests running moto in-process apply the patches, possibly more than once:
a wrapper is marked so that applying it again keeps the first and never wraps a wrapper.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MARK = "_overcast"


def wrap_once(owner: type, name: str, build: Callable[[Callable[..., Any]], Callable[..., Any]]
              ) -> None:
    """`build(original)` returns the replacement of `owner.name`, which may call `original`."""
    original = getattr(owner, name)
    if getattr(original, MARK, False):
        return
    replacement = build(original)
    setattr(replacement, MARK, True)
    setattr(owner, name, replacement)
