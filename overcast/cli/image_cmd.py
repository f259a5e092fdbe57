"""`overcast image build|ls`: the overcast VM image (AMI) of an account's AWS account.

The control plane builds it (reconciler/images.py); this asks for a build and follows it
live, or lists the account's images. See docs/boot-path.md.
"""

from __future__ import annotations

import time

import click
from rich.live import Live
from rich.table import Table

from overcast.cli import common
from overcast.cli.common import err, fail, out

FINAL = ("available", "error")
STEPS = {"pending": "resolving the stock Debian 12 AMI, launching the builder",
         "building": "the builder installs Python, the container runtime and overcast-agent",
         "creating": "CreateImage: waiting until the AMI is available",
         "available": "done", "error": "failed"}
account_option = click.option("--account", default=None,
                              help="Account slug (default: overcast.account, else yours).")


@click.group()
def image() -> None:
    """Build and list the overcast VM image (AMI) VMs boot from."""


def _images_path(slug: str) -> str:
    from overcast.client.api import seg

    return f"/accounts/{seg(slug)}/images"


def _table(rows: list[dict]) -> Table:
    table = Table(show_edge=False, header_style="bold")
    for col in ("id", "region", "version", "state", "image", "created", "reason"):
        table.add_column(col, overflow="fold", max_width=60 if col == "reason" else None)
    for r in rows:
        reason = (r.get("reason") or "").splitlines()
        table.add_row(str(r["id"]), r["region"], r["version"], r["state"],
                      r.get("image_id") or "", (r.get("created_at") or "")[:19],
                      reason[0] if reason else "")
    return table


@image.command("ls")
@account_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (a list of images).")
def ls(account: str | None, as_json: bool) -> None:
    """List the account's overcast VM images (hosted accounts share the operator's)."""
    from overcast.client.api import Api

    api = Api()
    rows = api.get(_images_path(api.account(account)))
    if as_json:
        common.print_json(rows)
    elif not rows:
        out.print("No images yet: `overcast image build` makes one.")
    else:
        out.print(_table(rows))


@image.command()
@account_option
@click.option("--region", default=None, help="AWS region (default: the account's).")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Follow the build until the image is available or failed.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to follow it.")
@click.option("--json", "as_json", is_flag=True, help="Print the final image as JSON.")
def build(account: str | None, region: str | None, wait: bool, timeout: float,
          as_json: bool) -> None:
    """Build the overcast VM image in the account's AWS account (admins).

    A builder instance boots the stock Debian 12 AMI and runs overcast's bootstrap script;
    its disk becomes the image. Exit code 1 if the build fails.
    """
    from overcast.client.api import Api

    api = Api()
    slug = api.account(account)
    row = api.request("POST", _images_path(slug), json={"region": region})
    if wait:
        row = _follow(api, slug, row, timeout, quiet=as_json)
    if as_json:
        common.print_json(row)
    elif row["state"] == "available":
        out.print(f"[green]Image {row['image_id']}[/] ({row['name']}) is available in "
                  f"{row['region']}.")
    elif row["state"] != "error":
        out.print(f"Image build {row['id']} is {row['state']}; follow it with "
                  "`overcast image ls` or `overcast notifications`.")
    if row["state"] == "error":
        fail(f"The image build failed: {row.get('reason')}")


def _follow(api, slug: str, row: dict, timeout: float, quiet: bool) -> dict:
    """Poll the build, showing its step live (rich), until it is final or `timeout`."""
    deadline = time.monotonic() + timeout
    live = Live(console=err, transient=False) if err.is_terminal and not quiet else None
    shown = None
    if live is not None:
        live.start()
    try:
        while True:
            line = f"image build {row['id']} in {row['region']}: [bold]{row['state']}[/] " \
                   f"- {STEPS.get(row['state'], '')}"
            if live is not None:
                live.update(line)
            elif not quiet and row["state"] != shown:
                err.print(line)
            shown = row["state"]
            if row["state"] in FINAL or time.monotonic() > deadline:
                return row
            time.sleep(2.0)
            row = next((r for r in api.get(_images_path(slug)) if r["id"] == row["id"]), row)
    finally:
        if live is not None:
            live.stop()
