"""A buffer of writes flushed to the database by a thread of its own every `every` seconds,
and once more when it stops (token last-use, heartbeats): request paths only touch memory."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod


class PeriodicFlusher(ABC):
    """Subclasses implement `flush()`; `start()`/`stop()` run it in the background."""

    thread_name = "overcast-flusher"

    def __init__(self, every: float) -> None:
        self._every = every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def flush(self) -> int:
        """Write what is buffered; the number of rows written."""

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.flush()
