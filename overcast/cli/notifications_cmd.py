"""`overcast notifications`: what the control plane did, and what went wrong."""

from __future__ import annotations

import json

import click

from overcast.cli import common
from overcast.cli.common import out


@click.command()
@click.option("--account", default=None, help="Account slug (default: yours).")
@click.option("--cluster", default=None, help="Only this cluster's notifications.")
@click.option("--level", default=None, help="Only this level.",
              type=click.Choice(["debug", "info", "warning", "error", "critical"],
                                case_sensitive=False))
@click.option("--event-type", default=None, help="Only this event type.")
@click.option("--limit", default=100, show_default=True, help="At most this many (1-1000).",
              type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object a line with -f).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new ones live (Ctrl-C stops).")
def notifications(account: str | None, cluster: str | None, level: str | None,
                  event_type: str | None, limit: int, as_json: bool, follow: bool) -> None:
    """Show an account's notifications (newest last when following)."""
    from overcast.client.api import Api
    from overcast.client.functions import (
        fetch_notifications,
        follow_notifications,
        notifications_table,
    )

    api = Api()
    slug = api.account(account)

    def fetch() -> list[dict]:
        return fetch_notifications(api, slug, cluster=cluster, level=level,
                                   event_type=event_type, limit=limit)

    rows = fetch()
    if not follow:
        if as_json:
            common.print_json(rows)
        elif rows:
            out.print(notifications_table(rows))
        else:
            out.print("No notifications.")
        return

    def emit(n: dict) -> None:
        if as_json:
            click.echo(json.dumps(n, default=str))
        else:
            click.echo(f"{n.get('time', '')}  {n.get('level', '')!s:<7} "
                       f"{n.get('event_type', '')}  {n.get('cluster') or '-'}  "
                       f"{n.get('message', '')}")

    # The newest `limit` first (oldest of them first), then live ones from the server's
    # event stream, starting right after the newest shown.
    for n in sorted(rows, key=lambda n: n.get("id") or 0):
        emit(n)
    last = max((n.get("id") or 0 for n in rows), default=0)
    try:
        for n in follow_notifications(slug, cluster=cluster, level=level,
                                      event_type=event_type, after_id=last, api=api):
            emit(n)
    except KeyboardInterrupt:
        pass
