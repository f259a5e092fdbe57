"""`overcast setup aws|hosted|show`: where an account's clusters run, with live progress."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from overcast.cli.common import err, fail, out, print_json

STYLE = {"created": "green", "found": "cyan", "attached": "green", "deleting": "yellow",
         "deleted": "red"}


@click.group()
def setup() -> None:
    """Run clusters in your own AWS account (`setup aws`), or in the hosted default."""


def _api():
    from overcast.client.api import Api

    return Api()


def _render(doc: dict[str, Any]):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(show_edge=False, header_style="bold")
    for column in ("kind", "id", "zone", "state"):
        table.add_column(column, overflow="fold")
    for r in doc.get("resources", []):
        table.add_row(r["kind"], r["aws_id"], r.get("zone") or "", r["state"],
                      style=STYLE.get(r["state"], ""))
    state = doc["state"]
    colour = {"ready": "green", "error": "red"}.get(state, "yellow")
    head = Text.assemble(("backend ", "bold"), f"{doc['kind']} in {doc['region']}: ",
                         (state, colour), f" ({doc['reason']})" if doc.get("reason") else "")
    return Group(head, table)


def watch(api, slug: str, timeout: float = 1800.0, final=("ready", "error")) -> dict[str, Any]:
    """Poll the backend, showing its resources as they appear, until it settles."""
    from rich.live import Live

    from overcast.client.backend import backend_path

    doc = api.get(backend_path(slug))
    deadline = time.monotonic() + timeout
    live = Live(_render(doc), console=out, refresh_per_second=4) if out.is_terminal else None
    seen: dict[tuple, str] = {}
    if live:
        live.start()
    try:
        while True:
            if live:
                live.update(_render(doc))
            else:  # a log, one line per change, when not on a terminal
                for r in doc.get("resources", []):
                    key = (r["kind"], r["aws_id"])
                    if seen.get(key) != r["state"]:
                        seen[key] = r["state"]
                        click.echo(f"{r['kind']:<18} {r['aws_id']:<40} "
                                   f"{r.get('zone') or '-':<12} {r['state']}")
            if doc["state"] in final or time.monotonic() > deadline:
                return doc
            time.sleep(0.5)
            doc = api.get(backend_path(slug))
    finally:
        if live:
            live.stop()


def follow_teardown(api, slug: str, timeout: float = 1800.0) -> dict[str, Any]:
    """Request the teardown and print each resource as it is deleted (from notifications:
    the backend's resource list is gone once it is hosted again)."""
    from overcast.client.backend import backend_path
    from overcast.client.functions import fetch_notifications

    before = fetch_notifications(api, slug, limit=1)
    last = before[0]["id"] if before else 0
    api.request("POST", backend_path(slug, "/teardown"))
    deadline = time.monotonic() + timeout
    while True:
        doc = api.get(backend_path(slug))
        rows = api.get(f"/accounts/{slug}/notifications", after_id=last, limit=1000)
        for n in sorted(rows, key=lambda n: n["id"]):
            last = max(last, n["id"])
            if n["event_type"].startswith("resource-") or n["level"] == "error":
                click.echo(n["message"])
        if doc["state"] in ("ready", "error") or time.monotonic() > deadline:
            return doc
        time.sleep(0.5)


@setup.command("aws")
@click.option("--account", default=None, help="Account slug (default: yours).")
@click.option("--region", default="us-east-1", show_default=True)
@click.option("--access-key-id", default=None, help="Long-lived key of an IAM user (AKIA...).")
@click.option("--secret-access-key", default=None,
              help="Its secret (prompted for, hidden, if omitted).")
@click.option("--zone", default=None, help="Default availability zone, e.g. us-east-1b.")
@click.option("--registry-type", type=click.Choice(["ecr", "docker_hub"]), default="ecr",
              show_default=True)
@click.option("--registry-username", default=None)
@click.option("--registry-access-token", default=None)
@click.option("--role", "role_mode", is_flag=True,
              help="Create a cross-account role with your local AWS profile and use it "
                   "(recommended: overcast then holds no keys of yours).")
@click.option("--print-policy", type=click.Choice(["setup", "ongoing"]), default=None,
              help="Print that IAM policy document and exit.")
@click.option("--teardown", is_flag=True,
              help="Delete every resource overcast created in your AWS account, then go back "
                   "to the hosted default.")
@click.option("--no-wait", is_flag=True, help="Return without watching the setup.")
def aws(account, region, access_key_id, secret_access_key, zone, registry_type,
        registry_username, registry_access_token, role_mode, print_policy, teardown,
        no_wait) -> None:
    """Run this account's clusters in your own AWS account."""
    if print_policy:
        import json

        from overcast.backends import provider_for

        click.echo(json.dumps(provider_for("aws").policy_documents()[print_policy], indent=2))
        return
    api = _api()
    slug = api.account(account)

    if teardown:
        _finish(follow_teardown(api, slug), "Teardown", hosted_ok=True)
        return
    body: dict[str, Any] = {"backend": "aws", "aws_region": region, "zone": zone,
                            "registry_type": registry_type,
                            "registry_username": registry_username,
                            "registry_access_token": registry_access_token}
    if role_mode:
        body["aws_role_arn"] = _make_role(api, slug, region)
    else:
        if not access_key_id:
            if not sys.stdin.isatty():
                fail("Give --access-key-id and --secret-access-key (or use --role).")
            access_key_id = click.prompt("AWS access key id")
        if not secret_access_key:
            secret_access_key = click.prompt("AWS secret access key", hide_input=True)
        body.update(aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key)
    err.print("Checking the credentials and their permissions...")
    doc = _put(api, slug, {k: v for k, v in body.items() if v is not None}, role_mode)
    if no_wait:
        out.print(f"Backend saved; setup is {doc['state']}. Follow it with `overcast setup show`.")
        return
    _finish(watch(api, slug), "Setup")


def _put(api, slug: str, body: dict[str, Any], role_mode: bool) -> dict[str, Any]:
    from overcast.client.backend import backend_path
    from overcast.client.errors import ApiError

    # A new IAM role takes a few seconds before AWS lets anyone assume it.
    deadline = time.monotonic() + (30 if role_mode else 0)
    while True:
        try:
            return api.request("PUT", backend_path(slug), json=body)
        except ApiError as exc:
            if not (role_mode and "could not assume" in str(exc)) or time.monotonic() > deadline:
                raise
            time.sleep(2)


def _make_role(api, slug: str, region: str) -> str:
    """Create the cross-account role in the account of the local AWS profile."""
    from overcast.backends import provider_for
    from overcast.backends.base import ProviderError
    from overcast.client.backend import backend_path

    info = api.get(backend_path(slug, "/role-setup"))
    provider = provider_for("aws")
    try:
        ctx = provider.connect(region)  # your profile: the SDK's default credential chain
        arn = provider.create_access_role(ctx, slug, info["trusted_account_id"],
                                          info["external_id"],
                                          info.get("policy_documents"))
    except ProviderError as exc:
        fail(f"Could not create the role with your local AWS profile: {exc}")
    out.print(f"Role [bold]{arn}[/] trusts account {info['trusted_account_id']} with "
              f"external id {info['external_id']}; policies setup + ongoing attached.")
    return arn


def _finish(doc: dict[str, Any], what: str, hosted_ok: bool = False) -> None:
    if doc["state"] == "error":
        fail(f"{what} failed: {doc.get('reason')}")
    if doc["state"] != "ready":
        fail(f"{what} is still {doc['state']}; follow it with `overcast setup show`.")
    if hosted_ok:
        out.print("[green]Done[/]: overcast's resources are deleted; clusters run in the "
                  "hosted default again.")
    else:
        out.print(f"[green]Ready[/]: clusters of this account now run in your AWS account "
                  f"({doc['region']}).")


@setup.command("hosted")
@click.option("--account", default=None, help="Account slug (default: yours).")
def hosted(account) -> None:
    """Back to the hosted default (resources in your AWS account are left as they are)."""
    from overcast.client.backend import set_backend_options

    doc = set_backend_options(account=account, backend="hosted")
    out.print(f"Backend: {doc['kind']} in {doc['region']}.")


@setup.command("show")
@click.option("--account", default=None, help="Account slug (default: yours).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(account, as_json: bool) -> None:
    """Show the backend: kind, region, state, masked key id and resources."""
    from overcast.client.backend import get_backend_options

    doc = get_backend_options(account)
    if as_json:
        print_json(doc)
    else:
        out.print(_render(doc))
