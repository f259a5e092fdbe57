"""`overcast notifications`: what the control plane did, and what went wrong."""

from __future__ import annotations

import json
import time

import click

from overcast.cli import common
from overcast.cli.common import out


@click.command()
@click.option("--account", default=None, help="Account slug (default: yours).")
@click.option("--cluster", default=None, help="Only this cluster's notifications.")
@click.option("--level", default=None, help="Only this level: info, warning, error.")
@click.option("--event-type", default=None, help="Only this event type.")
@click.option("--limit", default=100, show_default=True, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object a line with -f).")
@click.option("--follow", "-f", is_flag=True, help="Poll every second and print new ones.")
def notifications(account: str | None, cluster: str | None, level: str | None,
                  event_type: str | None, limit: int, as_json: bool, follow: bool) -> None:
    """Show an account's notifications (newest last when following)."""
    from overcast.client.api import Api
    from overcast.client.functions import fetch_notifications, notifications_table

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

    seen: set = set()

    def emit(batch: list[dict]) -> None:
        for n in sorted((n for n in batch if n.get("id") not in seen),
                        key=lambda n: (str(n.get("time")), n.get("id") or 0)):
            seen.add(n.get("id"))
            if as_json:
                click.echo(json.dumps(n, default=str))
            else:
                click.echo(f"{n.get('time', '')}  {n.get('level', '')!s:<7} "
                           f"{n.get('event_type', '')}  {n.get('cluster') or '-'}  "
                           f"{n.get('message', '')}")

    try:
        emit(rows)
        while True:
            time.sleep(1.0)
            emit(fetch())
    except KeyboardInterrupt:
        pass
