"""`overcast local-cloud`: run the local cloud, and talk to a running one."""

from __future__ import annotations

import json
import logging
import sys
import urllib.error
import urllib.request
from typing import Any

import click


def _running() -> dict[str, Any]:
    from overcast.localcloud.main import read_state

    state = read_state()
    if state is None:
        click.echo("The local cloud is not running; start it with `overcast local-cloud`.",
                   err=True)
        sys.exit(1)
    return state


def _control(path: str, body: dict[str, Any] | None = None, method: str = "POST") -> Any:
    """Call the running local cloud's control API (/_overcast/... on its endpoint)."""
    state = _running()
    data = json.dumps(body or {}).encode()
    request = urllib.request.Request(f"{state['endpoint']}/_overcast/{path}", data=data,
                                     method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
        click.echo(f"Error: {detail}", err=True)
        sys.exit(1)


@click.group("local-cloud", invoke_without_command=True)
@click.option("--port", default=4599, show_default=True, help="Port of the AWS endpoint.")
@click.option("--imds-port", default=4598, show_default=True,
              help="Port of the instance metadata service.")
@click.option("--enforce-iam/--no-enforce-iam", default=True, show_default=True,
              help="Check every AWS call against IAM policies, as AWS always does: only "
                   "IAM-made keys sign, and each caller may do what its policies allow. "
                   "--no-enforce-iam is for debugging moto only.")
@click.option("--no-seed", is_flag=True, help="Start empty: no nyc-tlc data, no region warm-up.")
@click.option("--hollow", is_flag=True,
              help="Hollow instances, for load tests: EC2 instances run but boot nothing; their "
                   "user data and IMDS data are spooled to $OVERCAST_HOME/run/hollow/ for a "
                   "load generator that plays their agents (bench/scale.py).")
@click.pass_context
def local_cloud(ctx: click.Context, port: int, imds_port: int, enforce_iam: bool,
                no_seed: bool, hollow: bool) -> None:
    """Run a simulated AWS (EC2, IAM, S3, Logs, ECR, STS) on this machine, in the foreground.

    Every EC2 instance overcast launches in it runs as a local process. Stop with Ctrl-C.
    """
    if ctx.invoked_subcommand is not None:
        return
    from overcast.localcloud.main import read_state, run_local_cloud

    existing = read_state()
    if existing is not None:
        raise click.ClickException(f"a local cloud is already running at "
                                   f"{existing['endpoint']} (pid {existing['pid']})")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        cloud = run_local_cloud(port=port, imds_port=imds_port, seed=not no_seed,
                                enforce_iam=enforce_iam, hollow=hollow)
    except OSError as exc:
        raise click.ClickException(f"cannot start the local cloud: {exc}") from exc
    click.echo(f"Local cloud ready at {cloud.endpoint} (IMDS {cloud.imds_url})"
               f"{', IAM enforced' if enforce_iam else ''}"
               f"{f', hollow instances (spool {cloud.hollow_spool})' if hollow else ''}"
               ". Ctrl-C to stop.")
    click.echo("In your shell: eval $(overcast local-cloud env)", err=True)
    cloud.serve_forever()
    click.echo("Local cloud stopped.")


@local_cloud.command("env")
def env_cmd() -> None:
    """Print the shell lines that point boto3, s3fs and dask at the running local cloud."""
    state = _running()
    click.echo(f"export AWS_ENDPOINT_URL={state['endpoint']}")
    click.echo("export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}")
    # IAM is enforced: only keys made by the local cloud's IAM sign. The operator's (an admin
    # of the local operator account) let you look around; anonymous reads need none.
    from overcast.localcloud.main import read_operator_keys

    keys = read_operator_keys() or {}
    click.echo(f"export AWS_ACCESS_KEY_ID={keys.get('access_key_id', 'testing')}")
    click.echo(f"export AWS_SECRET_ACCESS_KEY={keys.get('secret_access_key', 'testing')}")


@local_cloud.command("new-aws-account")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--user", default="overcast", show_default=True, help="IAM user name.")
@click.option("--with-admin", is_flag=True,
              help="Also an 'admin' user of that account (e.g. as the profile for "
                   "`overcast setup aws --role`).")
def new_aws_account_cmd(as_json: bool, user: str, with_admin: bool) -> None:
    """Create a simulated AWS account with an IAM user holding overcast's setup and ongoing
    policies, and print its long-lived keys."""
    account = _control("accounts", {"user_name": user, "admin": with_admin})
    if as_json:
        click.echo(json.dumps(account, indent=2))
        return
    for field in ("account_id", "user", "access_key_id", "secret_access_key",
                  "admin_access_key_id", "admin_secret_access_key"):
        if field in account:
            click.echo(f"{field}: {account[field]}")


@local_cloud.command("interrupt-spot")
@click.argument("instance_id")
@click.option("--notice", default=0.0, show_default=True,
              help="Seconds between the interruption notice (IMDS) and termination.")
def interrupt_spot_cmd(instance_id: str, notice: float) -> None:
    """Reclaim a spot instance, as AWS does: notice, then termination."""
    result = _control("spot-interruptions", {"instance_id": instance_id, "notice_seconds": notice})
    click.echo(f"{instance_id}: {result['action']} at {result['time']}")


@local_cloud.command("inject-fault")
@click.option("--action", default="RunInstances", show_default=True,
              help="EC2 action, or * for every action.")
@click.option("--error", default="InsufficientInstanceCapacity", show_default=True,
              help="InsufficientInstanceCapacity, RequestLimitExceeded, Throttling, "
                   "VcpuLimitExceeded, InternalError, Unavailable, ...")
@click.option("--zone", "zones", multiple=True, help="Only in this zone (repeatable).")
@click.option("--cluster", default=None,
              help="Only requests about this cluster id (its overcast:cluster tag).")
@click.option("--count", type=int, default=None, help="Fail this many calls (default: all).")
@click.option("--clear", is_flag=True, help="Remove every fault instead.")
@click.option("--list", "show", is_flag=True, help="List active faults.")
def inject_fault_cmd(action: str, error: str, zones: tuple[str, ...], cluster: str | None,
                     count: int | None, clear: bool, show: bool) -> None:
    """Make the local cloud answer EC2 calls with an AWS error (capacity, throttling)."""
    if clear:
        _control("faults", method="DELETE")
        click.echo("All faults cleared.")
        return
    if show:
        click.echo(json.dumps(_control("faults", method="GET"), indent=2))
        return
    rule = _control("faults", {"action": action, "error": error, "cluster": cluster,
                               "zones": list(zones) or None, "count": count})
    click.echo(f"Fault {rule['id']}: {action} -> {error} in "
               f"{', '.join(zones) or 'every zone'}"
               f"{f' for cluster {cluster}' if cluster else ''}"
               f"{f' for {count} calls' if count else ''}.")
