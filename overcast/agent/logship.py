"""Ship the VM's log records to CloudWatch Logs: group = the account's log group (created by the
control plane), stream = the instance id (created here).

``emit`` only appends to an in-memory queue, so logging never blocks dask's event loop; a daemon
thread sends batches every ``flush_interval`` seconds, and ``close`` (also run by
``logging.shutdown`` at exit) sends what is left. When CloudWatch is unreachable the queue keeps the
newest ``max_queue`` records and drops the oldest.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("overcast.agent.logship")

LOG_FORMAT = "%(name)s - %(levelname)s - %(message)s"
# Records from the AWS SDK and its HTTP stack are never shipped: sending them would log more
# records, which would be sent, which would log more ...
IGNORED_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")
# CloudWatch limits: 10,000 events and 1,048,576 bytes per call, each event's size counted as
# UTF-8 length + 26, one event at most 256 KiB.
MAX_BATCH_EVENTS = 10_000
MAX_BATCH_BYTES = 1_048_576
EVENT_OVERHEAD = 26
MAX_EVENT_CHARS = 200_000

Event = tuple[int, str]  # (timestamp in ms, message)


def _default_client_factory(region: str) -> Any:
    # Imported here, in the sender thread, so boto3's import (~0.2 s) stays off the boot path.
    import boto3
    from botocore.config import Config

    # Credentials and endpoint come from boto3's default chain: the IMDS (instance profile) and
    # AWS_ENDPOINT_URL in the local cloud. Short timeouts: a dead endpoint must not stall exit.
    config = Config(
        connect_timeout=2,
        read_timeout=5,
        retries={"max_attempts": 2, "mode": "standard"},
    )
    return boto3.session.Session().client("logs", region_name=region, config=config)


class CloudWatchHandler(logging.Handler):
    def __init__(
        self,
        log_group: str,
        log_stream: str,
        region: str,
        *,
        flush_interval: float = 1.0,
        max_queue: int = 20_000,
        client_factory: Callable[[str], Any] | None = None,
    ) -> None:
        super().__init__()
        self.log_group = log_group
        self.log_stream = log_stream
        self.region = region
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.dropped = 0
        self._client_factory = client_factory or _default_client_factory
        self._client: Any = None
        self._stream_ready = False
        self._queue: deque[Event] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._send_lock = threading.Lock()  # the thread and close() never send at once
        self._local = threading.local()  # marks "this thread is sending right now"
        self._thread: threading.Thread | None = None
        self._retry_at = 0.0
        self._backoff = 1.0
        self._closed = False
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    # -- logging.Handler ------------------------------------------------------------------------
    def filter(self, record: logging.LogRecord) -> bool:
        # Runs before Handler.handle takes the handler lock, so records logged while sending
        # (by botocore, or by us) are dropped without ever touching the lock or the queue.
        if getattr(self._local, "sending", False):
            return False
        if record.name.startswith(IGNORED_LOGGERS):
            return False
        return bool(super().filter(record))

    def emit(self, record: logging.LogRecord) -> None:
        if self._closed:
            return
        try:
            message = self.format(record)
        except Exception:  # noqa: BLE001 - logging's own convention: report, never raise
            self.handleError(record)
            return
        if len(message) > MAX_EVENT_CHARS:
            message = message[:MAX_EVENT_CHARS] + " ...[truncated]"
        while len(self._queue) >= self.max_queue:
            self._queue.popleft()  # drop oldest: recent lines explain a failure best
            self.dropped += 1
        self._queue.append((int(record.created * 1000), message))
        if len(self._queue) >= MAX_BATCH_EVENTS:
            self._wake.set()

    def flush(self) -> None:
        """Send what is queued now (synchronously)."""
        self._send_pending()

    def send_soon(self) -> None:
        """Have the sender thread send what is queued now rather than at its next interval
        (the VM is shutting down: what is sent while dask closes is not left to `close`)."""
        self.start()
        self._wake.set()

    def close(self) -> None:
        if self._closed:
            return
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._retry_at = 0.0  # last chance: ignore any backoff
        self._send_pending(lock_timeout=5.0)  # never wait forever on a stuck sender thread
        self._closed = True
        super().close()

    # -- sender thread --------------------------------------------------------------------------
    def start(self) -> CloudWatchHandler:
        """Start the background sender. Until then records are only queued; the agent starts it
        once dask is up so boto3's import does not compete with dask's for the CPU at boot."""
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, name="overcast-logship", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            if self._stop.is_set():
                break  # close() does the final send
            self._send_pending()

    def _send_pending(self, lock_timeout: float = -1) -> None:
        if not self._queue or time.monotonic() < self._retry_at:
            return
        if not self._send_lock.acquire(timeout=lock_timeout):
            return
        self._local.sending = True
        try:
            while self._queue:
                batch = self._take_batch()
                if not self._put(batch):
                    self._requeue(batch)
                    break
        finally:
            self._local.sending = False
            self._send_lock.release()

    def _take_batch(self) -> list[Event]:
        batch: list[Event] = []
        size = 0
        while self._queue and len(batch) < MAX_BATCH_EVENTS:
            ts, msg = self._queue[0]
            event_size = len(msg.encode("utf-8", "replace")) + EVENT_OVERHEAD
            if batch and size + event_size > MAX_BATCH_BYTES:
                break
            self._queue.popleft()
            batch.append((ts, msg))
            size += event_size
        # Records from several threads can be a few ms out of order; CloudWatch wants order.
        batch.sort(key=lambda e: e[0])
        return batch

    def _requeue(self, batch: list[Event]) -> None:
        self._queue.extendleft(reversed(batch))
        while len(self._queue) > self.max_queue:
            self._queue.popleft()
            self.dropped += 1

    def _put(self, batch: list[Event]) -> bool:
        """Send one batch; False means "keep it and try later"."""
        try:
            if self._client is None:
                self._client = self._client_factory(self.region)
            if not self._stream_ready:
                self._ensure_stream()
            self._client.put_log_events(
                logGroupName=self.log_group,
                logStreamName=self.log_stream,
                logEvents=[{"timestamp": ts, "message": msg} for ts, msg in batch],
            )
        except Exception as exc:  # noqa: BLE001 - shipping logs must never crash the agent
            code = _error_code(exc)
            if code == "ResourceNotFoundException":
                self._stream_ready = False  # stream (or group) gone: recreate next time
            elif code == "InvalidParameterException":
                # A batch CloudWatch will never take (e.g. events too old): drop it, move on.
                self.dropped += len(batch)
                self._warn(f"CloudWatch rejected {len(batch)} log events: {exc}")
                return True
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, 30.0)
            self._warn(f"cannot ship logs to CloudWatch ({code or type(exc).__name__}); will retry")
            return False
        self._backoff = 1.0
        return True

    def _ensure_stream(self) -> None:
        try:
            self._client.create_log_stream(
                logGroupName=self.log_group, logStreamName=self.log_stream
            )
        except Exception as exc:
            if _error_code(exc) != "ResourceAlreadyExistsException":
                raise
        self._stream_ready = True

    def _warn(self, message: str) -> None:
        # Straight to stderr, not through logging: this is about logging itself failing.
        with contextlib.suppress(OSError, ValueError):  # stderr closed at exit
            sys.stderr.write(f"overcast.agent.logship - WARNING - {message}\n")


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def install(handler: CloudWatchHandler, level: int = logging.INFO) -> None:
    """Attach the handler to the root logger (call ``route_distributed_logs`` once distributed is
    imported, so its records reach the root logger too)."""
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)


def route_distributed_logs() -> None:
    """distributed's own logging config gives its loggers a stderr handler and
    ``propagate=False``; swap that for propagation to the root logger, whose handlers (stderr and
    CloudWatch) then carry "distributed.scheduler - INFO - ..." lines like any other."""
    for name in list(logging.root.manager.loggerDict):
        if name != "distributed" and not name.startswith("distributed."):
            continue
        lg = logging.getLogger(name)
        if lg.propagate:
            continue
        for h in list(lg.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                lg.removeHandler(h)
        lg.propagate = True
