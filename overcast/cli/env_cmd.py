"""`overcast env create|ls|show|delete`: software environments of an account."""

from __future__ import annotations

import click
from rich.table import Table

from overcast.cli import common
from overcast.cli.common import out

account_option = click.option("--account", default=None,
                              help="Account slug (default: overcast.account, else yours).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group()
def env() -> None:
    """Create, list, show and delete software environments (the packages on every VM)."""


@env.command()
@click.argument("name")
@click.option("--requirements", "-r", type=click.Path(exists=True, dir_okay=False),
              help="A requirements.txt file.")
@click.option("--pip", "pip", multiple=True, metavar="PKG",
              help="A requirement such as pandas==2.2.3 (repeat for more).")
@click.option("--container", metavar="IMAGE",
              help="An existing image (public or private) with dask and distributed.")
@account_option
@json_option
def create(name: str, requirements: str | None, pip: tuple[str, ...], container: str | None,
           account: str | None, as_json: bool) -> None:
    """Create software environment NAME (a new version if NAME exists with another spec)."""
    from overcast.client.envs import create_software_environment

    if sum(bool(x) for x in (requirements, pip, container)) != 1:
        raise click.UsageError("Give exactly one of --requirements, --pip or --container.")
    doc = create_software_environment(name, requirements=requirements, pip=list(pip) or None,
                                      container=container, account=account)
    if as_json:
        common.print_json(doc)
        return
    verb = "Created" if doc.get("created") else "Unchanged:"
    out.print(f"{verb} {doc['name']} v{doc['version']} ({doc['kind']}), image "
              f"{doc.get('image_uri') or 'to be built'} [{doc['build_state']}]")


@env.command("ls")
@account_option
@json_option
def ls(account: str | None, as_json: bool) -> None:
    """List the software environments of an account (latest version of each)."""
    from overcast.client.envs import list_software_environments
    from overcast.client.functions import short_time

    envs = list_software_environments(account)
    if as_json:
        common.print_json(envs)
        return
    if not envs:
        out.print("No software environments.")
        return
    table = Table(show_edge=False, header_style="bold")
    for col in ("name", "version", "kind", "state", "lock", "image", "created"):
        table.add_column(col, overflow="fold")
    for name, e in envs.items():
        table.add_row(name, str(e["version"]), str(e["kind"]), str(e["build_state"]),
                      str(e.get("lock_hash") or "")[:12], str(e.get("image_uri") or ""),
                      short_time(e.get("created_at")))
    out.print(table)


@env.command()
@click.argument("name")
@click.option("--version", "version", type=click.IntRange(min=1), default=None,
              help="A version (default: the latest).")
@account_option
@json_option
def show(name: str, version: int | None, account: str | None, as_json: bool) -> None:
    """Show software environment NAME: spec, lock, image and build state."""
    from overcast.client.envs import get_software_environment

    doc = get_software_environment(name, account, version)
    if as_json:
        common.print_json(doc)
        return
    out.print(f"[bold]{doc['name']}[/] v{doc['version']} ({doc['kind']})")
    out.print(f"state: {doc['build_state']}" + (f" ({doc['reason']})" if doc.get("reason")
                                                else ""))
    out.print(f"image: {doc.get('image_uri') or '-'}")
    out.print(f"lock:  {doc.get('lock_hash') or '-'}")
    if doc.get("lock"):
        click.echo(doc["lock"].rstrip("\n"))


@env.command()
@click.argument("name")
@account_option
def delete(name: str, account: str | None) -> None:
    """Delete software environment NAME (all versions)."""
    from overcast.client.envs import delete_software_environment

    doc = delete_software_environment(name, account)
    out.print(f"Deleted {name} ({doc.get('deleted_versions', 0)} version(s)).")
