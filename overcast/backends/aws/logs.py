"""The account's CloudWatch log group (named after the slug): one stream per instance."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from ... import tags as T
from .errors import AwsError, code_of, wrap
from .network import Report, Resource, noop
from .session import AwsContext

MAX_EVENTS_PER_STREAM = 10_000  # a page of logs for a person, not an archive


def _find_group(logs: Any, name: str) -> dict | None:
    pages = logs.get_paginator("describe_log_groups").paginate(logGroupNamePrefix=name)
    for page in pages:
        for group in page["logGroups"]:
            if group["logGroupName"] == name:
                return group
    return None


def _is_ours(logs: Any, group: dict) -> bool:
    """A group is ours only if it carries our managed and deployment tags; one that merely
    has the slug's name (someone else's, or another control plane's) is never adopted."""
    arn = group.get("arn", "").removesuffix(":*")
    return T.ours(logs.list_tags_for_resource(resourceArn=arn).get("tags"))


def _not_ours(name: str) -> AwsError:
    return AwsError(
        f"A CloudWatch log group named {name!r} already exists and was not created by this "
        "overcast control plane. Rename or delete it, then set the backend up again."
    )


@wrap
def ensure_log_group(
    ctx: AwsContext, slug: str, retention_days: int = 30, report: Report = noop
) -> str:
    """Create the log group `slug` with the retention; returns its name."""
    logs = ctx.client("logs")
    group = _find_group(logs, slug)
    state = "found"
    if group is None:
        try:
            logs.create_log_group(logGroupName=slug, tags=T.resource_tags(slug))
            state = "created"
        except ClientError as exc:
            if code_of(exc) != "ResourceAlreadyExistsException":
                raise
        group = _find_group(logs, slug) or {}
    if group and not _is_ours(logs, group):
        raise _not_ours(slug)
    if group.get("retentionInDays") != retention_days:
        logs.put_retention_policy(logGroupName=slug, retentionInDays=retention_days)
    report(Resource("log-group", group.get("arn", slug), None, state))
    return slug


@wrap
def read_streams(
    ctx: AwsContext, group: str, stream_names: list[str], start_ms: int | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Events of each stream, oldest first: {stream: [{"timestamp": ms, "message": str}]}.

    A stream (or group) that does not exist yet, e.g. an instance still booting, reads as [].
    """
    logs = ctx.client("logs")
    out: dict[str, list[dict[str, Any]]] = {}
    for name in stream_names:
        events: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "logGroupName": group,
            "logStreamName": name,
            "startFromHead": True,
        }
        if start_ms is not None:
            kwargs["startTime"] = start_ms
        try:
            while len(events) < MAX_EVENTS_PER_STREAM:
                resp = logs.get_log_events(**kwargs)
                events.extend(
                    {"timestamp": e["timestamp"], "message": e["message"]} for e in resp["events"]
                )
                token = resp.get("nextForwardToken")
                # The end is reached when the token stops changing (or the page is empty).
                if not resp["events"] or not token or token == kwargs.get("nextToken"):
                    break
                kwargs["nextToken"] = token
        except ClientError as exc:
            if code_of(exc) != "ResourceNotFoundException":
                raise
        out[name] = events[:MAX_EVENTS_PER_STREAM]
    return out


@wrap
def delete_log_group(ctx: AwsContext, slug: str, report: Report = noop) -> None:
    logs = ctx.client("logs")
    group = _find_group(logs, slug)
    if group is None or not _is_ours(logs, group):
        return  # gone, or not ours: a same-named group overcast did not create stays
    try:
        logs.delete_log_group(logGroupName=slug)
    except ClientError as exc:
        if code_of(exc) != "ResourceNotFoundException":
            raise
        return
    report(Resource("log-group", slug, None, "deleted"))
