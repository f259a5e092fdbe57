"""Module-level helpers: list, delete, logs and notifications, without a Cluster object."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx

from overcast.client.api import Api, seg
from overcast.client.logs import format_events

LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning",
          logging.ERROR: "error", logging.CRITICAL: "critical"}


def list_clusters(account: str | None = None, *, include_finished: bool = False,
                  api: Api | None = None) -> dict[str, dict]:
    """Clusters of `account` (default: your default account), by name -> Cluster document:
    the active ones (pending, starting, running, stopping), or with `include_finished` the
    stopped and failed ones too (newest of a name wins)."""
    api = api or Api()
    slug = api.account(account)
    path = Api.clusters_path(slug) + ("?state=all" if include_finished else "")
    return {c["name"]: c for c in reversed(api.get(path))}


def delete_cluster(name: str, account: str | None = None, *, api: Api | None = None) -> dict:
    """Ask the control plane to stop cluster `name`; returns at once (`desired_state`
    `stopped`; `state` becomes `stopping` on the control plane's next pass)."""
    api = api or Api()
    slug = api.account(account)
    return api.request("DELETE", Api.clusters_path(slug, name))


def get_logs(cluster_name: str, account: str | None = None, *,
             api: Api | None = None) -> dict[str, str]:
    """Logs of every instance of a cluster (CloudWatch), as {instance id: text}."""
    return {iid: format_events(events)
            for iid, events in get_log_events(cluster_name, account, api=api).items()}


def get_log_events(cluster_name: str, account: str | None = None, *,
                   api: Api | None = None) -> dict[str, list[dict[str, Any]]]:
    """Raw log events {instance id: [{"timestamp": ms, "message": str}]} (used by --follow)."""
    api = api or Api()
    slug = api.account(account)
    data = api.get(Api.clusters_path(slug, cluster_name, "/logs")) or {}
    return data.get("streams", {})


def get_notifications(
    account: str | None = None,
    cluster: str | None = None,
    level: str | int | None = None,
    event_type: str | None = None,
    limit: int = 100,
    json: bool = False,
    *,
    api: Api | None = None,
) -> list[dict[str, Any]] | None:
    """Notifications of an account: what the control plane did and what went wrong.

    Like Coiled's: with `json=True` returns a list of dicts (`id, time, level, event_type,
    cluster, message`, newest first as the server sends them); otherwise prints a table
    and returns None. `level` is a name ("info", "warning", "error") or a logging level.
    """
    api = api or Api()
    rows = fetch_notifications(api, api.account(account), cluster=cluster, level=level,
                               event_type=event_type, limit=limit)
    if json:
        return rows
    from rich.console import Console

    Console().print(notifications_table(rows))
    return None


def fetch_notifications(api: Api, slug: str, *, cluster: str | None = None,
                        level: str | int | None = None, event_type: str | None = None,
                        limit: int | None = 100) -> list[dict[str, Any]]:
    if isinstance(level, int):
        level = LEVELS.get(level, str(level))
    return api.get(f"/accounts/{seg(slug)}/notifications", cluster=cluster, level=level,
                   event_type=event_type, limit=limit)


def follow_notifications(account: str | None = None, *, cluster: str | None = None,
                         level: str | int | None = None, event_type: str | None = None,
                         after_id: int | None = None,
                         api: Api | None = None) -> Iterator[dict[str, Any]]:
    """New notifications as they happen (oldest first), from the server's event stream.
    Runs until the caller stops iterating; reconnects (after the last id seen) if the
    stream drops, e.g. while the control plane restarts."""
    import json as _json
    import time

    from overcast.client.errors import ServerUnreachable

    api = api or Api()
    slug = api.account(account)
    if isinstance(level, int):
        level = LEVELS.get(level, str(level))
    while True:
        try:
            for event, data in api.events(f"/accounts/{seg(slug)}/notifications/stream",
                                          cluster=cluster, level=level,
                                          event_type=event_type, after_id=after_id):
                if event == "notification":
                    row = _json.loads(data)
                    after_id = row["id"]
                    yield row
        except (ServerUnreachable, httpx.TransportError):
            pass
        time.sleep(1.0)


LEVEL_STYLE = {"debug": "dim", "info": "", "warning": "yellow", "error": "red",
               "critical": "bold red"}


def notifications_table(rows: list[dict[str, Any]]):
    from rich.table import Table

    table = Table(show_edge=False, header_style="bold")
    table.add_column("time", no_wrap=True)
    table.add_column("level", no_wrap=True)
    table.add_column("event", overflow="fold", max_width=22)
    table.add_column("cluster", overflow="fold", max_width=16)
    table.add_column("message", overflow="fold")
    for n in rows:
        level = str(n.get("level") or "")
        count = int(n.get("count") or 1)
        repeat = f" (x{count}, last {short_time(n.get('last_at'))})" if count > 1 else ""
        table.add_row(short_time(n.get("time")), level, str(n.get("event_type") or ""),
                      str(n.get("cluster") or ""), str(n.get("message") or "") + repeat,
                      style=LEVEL_STYLE.get(level.lower(), ""))
    return table


def short_time(value: Any) -> str:
    """'2026-11-25T16:02:45.123456Z' -> '2026-11-25 16:02:45' (tables stay narrow)."""
    text = str(value or "")
    return text.replace("T", " ")[:19]
