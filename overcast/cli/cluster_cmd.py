"""`overcast cluster ls|stop|logs`."""

from __future__ import annotations

import time

import click
from rich.table import Table

from overcast.cli import common
from overcast.cli.common import out

account_option = click.option("--account", default=None,
                              help="Account slug (default: overcast.account, else yours).")


@click.group()
def cluster() -> None:
    """List, stop and read the logs of clusters."""


@cluster.command("ls")
@account_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON ({name: cluster}).")
@click.option("--all", "show_all", is_flag=True,
              help="Finished (stopped, failed) clusters too, not only active ones.")
def ls(account: str | None, as_json: bool, show_all: bool) -> None:
    """List the active clusters of an account (--all: finished ones too)."""
    from overcast.client.functions import list_clusters, short_time

    clusters = list_clusters(account, include_finished=show_all)
    if as_json:
        common.print_json(clusters)
        return
    if not clusters:
        out.print("No clusters.")
        return
    table = Table(show_edge=False, header_style="bold")
    show_dash = any(c.get("dashboard_link") for c in clusters.values())
    for col in ("name", "state", "workers", "zone", "created"):
        table.add_column(col, overflow="fold")
    if show_dash:
        table.add_column("dashboard", overflow="fold")
    # Short; the full reason is in `--json` and `overcast notifications`.
    table.add_column("reason", overflow="ellipsis", max_width=30)
    for name, c in clusters.items():
        row = [name, c.get("state", ""), f"{c.get('workers_ready', 0)}/{c.get('n_workers', 0)}",
               str(c.get("zone") or c.get("region") or ""), short_time(c.get("created_at"))[5:16]]
        if show_dash:
            row.append(str(c.get("dashboard_link") or ""))
        reason = str(c.get("reason") or "")
        table.add_row(*row, reason if len(reason) < 60 else reason[:57] + "...")
    out.print(table)


@cluster.command()
@click.argument("name")
@account_option
def stop(name: str, account: str | None) -> None:
    """Stop (delete) cluster NAME; its instances are terminated in the background."""
    from overcast.client.functions import delete_cluster

    info = delete_cluster(name, account) or {}
    state = info.get("state", "stopping")
    if info.get("desired_state") == "stopped" and state not in ("stopping", "stopped", "error"):
        state = "stopping"  # asked; the reconciler acts on it within a pass
    out.print(f"Cluster {name}: {state}.")


@cluster.command()
@click.argument("name")
@account_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
@click.option("--interval", default=1.0, show_default=True, help="Poll interval for --follow.")
def logs(name: str, account: str | None, follow: bool, interval: float) -> None:
    """Print the logs of every instance of cluster NAME."""
    from overcast.client.api import Api
    from overcast.client.functions import get_log_events
    from overcast.client.logs import format_event

    api = Api()
    slug = api.account(account)
    seen: dict[str, int] = {}

    def show() -> None:
        streams = get_log_events(name, slug, api=api)
        for iid in sorted(streams):
            events = streams[iid]
            new = events[seen.get(iid, 0):]  # CloudWatch streams only grow
            if not new:
                continue
            if not follow:
                out.print(f"[bold]== {iid} ==[/]")
            for event in new:
                line = format_event(event)
                click.echo(f"{iid} | {line}" if follow else line)
            seen[iid] = len(events)

    show()
    if not seen and not follow:
        out.print("No logs yet.")
    try:
        while follow:
            time.sleep(interval)
            show()
    except KeyboardInterrupt:
        pass
