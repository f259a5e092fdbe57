"""Each cluster's token hash, kept once seen: the agents' bearer check without a query.

A cluster's token never changes, and cluster rows are never deleted, so a hash read once
stays true for the life of the process: a thousand workers' reports check their bearer in
the event loop instead of a thread and a database read each. Bounded: the least recently
used hashes are dropped first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from overcast.server.auth import tokens_match

SIZE = 10_000  # clusters whose hashes are kept


class ClusterTokens:
    def __init__(self, size: int = SIZE) -> None:
        self._hashes: OrderedDict[int, str] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def check(self, cluster_id: int, token: str) -> bool | None:
        """True/False: the token is/is not this cluster's. None: not known here yet."""
        with self._lock:
            token_hash = self._hashes.get(cluster_id)
            if token_hash is not None:
                self._hashes.move_to_end(cluster_id)
        return None if token_hash is None else tokens_match(token, token_hash)

    def remember(self, cluster_id: int, token_hash: str) -> None:
        with self._lock:
            self._hashes[cluster_id] = token_hash
            self._hashes.move_to_end(cluster_id)
            while len(self._hashes) > self._size:
                self._hashes.popitem(last=False)
