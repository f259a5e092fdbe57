from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from overcast.agent import logship
from overcast.agent.logship import CloudWatchHandler

REGION = "us-east-1"
GROUP = "acme"
STREAM = "i-0abc"


@pytest.fixture
def aws(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # On top of the shared fake keys: a default region, and no IMDS endpoint from the env.
    monkeypatch.delenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield


def _events(stream: str = STREAM) -> list[str]:
    logs = boto3.client("logs", region_name=REGION)
    try:
        resp = logs.get_log_events(logGroupName=GROUP, logStreamName=stream, startFromHead=True)
    except logs.exceptions.ResourceNotFoundException:  # stream not created yet
        return []
    return [e["message"] for e in resp["events"]]


def _record(name: str, msg: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, None, None)


@pytest.fixture
def root_handler(aws: None) -> Iterator[CloudWatchHandler]:
    """The handler on the root logger, as the agent installs it."""
    boto3.client("logs", region_name=REGION).create_log_group(logGroupName=GROUP)
    handler = CloudWatchHandler(GROUP, STREAM, REGION, flush_interval=0.05)
    root = logging.getLogger()
    old_level = root.level
    logship.install(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


def test_records_arrive_in_group_and_stream(root_handler: CloudWatchHandler) -> None:
    logging.getLogger("overcast.test.component").info("Receive client connection: %s", "c-1")
    logging.getLogger("overcast.agent").warning("hello")
    root_handler.flush()
    assert _events() == [
        "overcast.test.component - INFO - Receive client connection: c-1",
        "overcast.agent - WARNING - hello",
    ]


def test_background_thread_ships_within_a_second(root_handler: CloudWatchHandler) -> None:
    root_handler.start()
    logging.getLogger("overcast.agent").info("from the thread")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if _events():
            break
        time.sleep(0.05)
    assert _events() == ["overcast.agent - INFO - from the thread"]


def test_send_soon_ships_before_the_interval(aws: None) -> None:
    """At power-off the agent has seconds: what is queued goes now, not at the next beat."""
    boto3.client("logs", region_name=REGION).create_log_group(logGroupName=GROUP)
    handler = CloudWatchHandler(GROUP, STREAM, REGION, flush_interval=60)
    try:
        handler.emit(_record("overcast.agent", "closing dask worker (signal)"))
        handler.send_soon()  # also starts the sender thread if nothing had
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _events():
            time.sleep(0.05)
        assert _events() == ["overcast.agent - INFO - closing dask worker (signal)"]
    finally:
        handler.close()


def test_botocore_records_are_not_shipped_and_do_not_recurse(
    root_handler: CloudWatchHandler,
) -> None:
    # DEBUG on the SDK: every put_log_events call logs dozens of records. If the handler shipped
    # them, each flush would produce more to flush, forever.
    for name in ("botocore", "boto3", "urllib3"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        root_handler.setLevel(logging.DEBUG)
        logging.getLogger("overcast.agent").info("one")
        logging.getLogger("botocore.endpoint").debug("should not ship")
        for _ in range(3):
            root_handler.flush()
        assert len(root_handler._queue) == 0
        assert _events() == ["overcast.agent - INFO - one"]
    finally:
        for name in ("botocore", "boto3", "urllib3"):
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_existing_stream_is_reused(aws: None) -> None:
    logs = boto3.client("logs", region_name=REGION)
    logs.create_log_group(logGroupName=GROUP)
    logs.create_log_stream(logGroupName=GROUP, logStreamName=STREAM)
    handler = CloudWatchHandler(GROUP, STREAM, REGION)
    handler.handle(_record("x", "after restart"))
    handler.close()
    assert _events() == ["x - INFO - after restart"]


def test_missing_group_keeps_records_until_it_exists(aws: None) -> None:
    handler = CloudWatchHandler(GROUP, STREAM, REGION)
    handler.handle(_record("x", "early"))
    handler.flush()  # group not there yet (the control plane creates it)
    assert len(handler._queue) == 1
    boto3.client("logs", region_name=REGION).create_log_group(logGroupName=GROUP)
    handler._retry_at = 0.0  # skip the backoff
    handler.handle(_record("x", "later"))
    handler.flush()
    assert _events() == ["x - INFO - early", "x - INFO - later"]
    handler.close()


def test_drop_oldest_when_the_queue_is_full(aws: None) -> None:
    boto3.client("logs", region_name=REGION).create_log_group(logGroupName=GROUP)
    handler = CloudWatchHandler(GROUP, STREAM, REGION, max_queue=3)
    for i in range(5):
        handler.handle(_record("x", f"m{i}"))
    assert handler.dropped == 2
    handler.close()
    assert _events() == ["x - INFO - m2", "x - INFO - m3", "x - INFO - m4"]


def test_emit_never_blocks_on_aws(aws: None) -> None:
    """A dead endpoint costs the logging caller nothing: emit only queues."""

    def slow_factory(region: str):
        time.sleep(10)
        raise AssertionError("not reached in emit")

    handler = CloudWatchHandler(GROUP, STREAM, REGION, client_factory=slow_factory)
    start = time.monotonic()
    for i in range(1000):
        handler.handle(_record("x", f"m{i}"))
    assert time.monotonic() - start < 0.5
    handler._closed = True  # skip the final flush (it would call the slow factory)


def test_close_flushes_and_is_idempotent(aws: None) -> None:
    boto3.client("logs", region_name=REGION).create_log_group(logGroupName=GROUP)
    handler = CloudWatchHandler(GROUP, STREAM, REGION).start()
    handler.handle(_record("x", "bye"))
    handler.close()
    handler.close()
    handler.handle(_record("x", "after close"))  # ignored, no error
    assert _events() == ["x - INFO - bye"]


def test_out_of_order_records_are_sorted(aws: None) -> None:
    boto3.client("logs", region_name=REGION).create_log_group(logGroupName=GROUP)
    handler = CloudWatchHandler(GROUP, STREAM, REGION)
    late, early = _record("x", "second"), _record("x", "first")
    early.created = late.created - 1
    handler.handle(late)
    handler.handle(early)
    handler.close()
    assert _events() == ["x - INFO - first", "x - INFO - second"]


def test_route_distributed_logs() -> None:
    import distributed  # noqa: F401  (configures its loggers: propagate=False + stderr)

    lg = logging.getLogger("distributed")
    saved = (lg.propagate, list(lg.handlers))
    try:
        logship.route_distributed_logs()
        assert lg.propagate is True
        assert not [h for h in lg.handlers if type(h) is logging.StreamHandler]
    finally:
        lg.propagate, lg.handlers[:] = saved[0], saved[1]
