"""Work-arounds for bugs of the dask versions overcast ships, applied when the client is imported.

Persisting a bare `read_parquet(..., columns=[...])` (the docs' example) returns a corrupt
collection in dask/distributed <= 2026.8.0 (dask/dask#12488; fix proposed in dask/dask#12489):
`Client.persist` optimizes the collections' expressions inside a sequence, where the
optimizer's "tune" stage fuses small parquet reads into fewer partitions, and sends that to the
scheduler; but it rebuilds the returned collection from the collection it was given, whose
expression, a root, never went through that stage. The collection then names partitions the
scheduler never made, and the next compute fails with "lost dependencies" although no worker
went away. `df.persist()`, `dask.persist(df)` and `client.persist(df)` all end there.

The fix: hand `Client.persist` dataframes already optimized the way it optimizes them (a fixed
point: its own optimization then changes nothing), so the collection it returns matches the
futures it holds. (It replaces a dask config default that turned the tune stage off: that lost
small-file fusion, and `dask.config.refresh()`, which the e2e harness calls, dropped it.)
"""

from __future__ import annotations

import sys
from typing import Any

AFFECTED_UP_TO = (2026, 8, 0)  # the newest release with the bug; later ones are left alone


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def tuned(collections: list[Any]) -> list[Any]:
    """`collections` with each dask dataframe optimized as `Client.persist` will optimize it
    (together, inside a sequence); other collections as they are."""
    if "dask.dataframe" not in sys.modules:  # no dataframe can exist without it
        return collections
    from dask._expr import _ExprSequence
    from dask.dataframe.dask_expr._collection import FrameBase, new_collection

    where = [i for i, c in enumerate(collections) if isinstance(c, FrameBase)]
    if not where:
        return collections
    optimized = _ExprSequence(*(collections[i].expr for i in where)).optimize()
    out = list(collections)
    for i, expr in zip(where, optimized.operands, strict=True):
        out[i] = new_collection(expr)
    return out


def apply() -> bool:
    """Patch `Client.persist` when the installed distributed has the bug; True if patched."""
    import distributed
    from distributed import Client

    if _version(distributed.__version__) > AFFECTED_UP_TO:
        return False
    if getattr(Client.persist, "_overcast_fixed", False):
        return True
    original = Client.persist

    def persist(self: Any, collections: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(collections, (tuple, list, set, frozenset)):
            return original(self, tuned(list(collections)), *args, **kwargs)
        return original(self, tuned([collections])[0], *args, **kwargs)

    persist.__doc__ = original.__doc__
    persist._overcast_fixed = True  # type: ignore[attr-defined]
    Client.persist = persist
    return True
