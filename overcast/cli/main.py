"""The `overcast` command."""

from __future__ import annotations

import click

from overcast.cli.cluster_cmd import cluster
from overcast.cli.common import OvercastGroup
from overcast.cli.demo_cmd import demo
from overcast.cli.image_cmd import image
from overcast.cli.notifications_cmd import notifications
from overcast.cli.stack_cmd import down, server, status, up


@click.group(cls=OvercastGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="overcast", prog_name="overcast")
def cli() -> None:
    """overcast: Dask clusters on AWS, or on the local cloud on this machine.

    Start here: `overcast up`, then `overcast demo`.
    """


for command in (up, down, status, server, cluster, notifications, demo, image):
    cli.add_command(command)
cli.add_command(__import__("overcast.cli.setup_cmd", fromlist=["setup"]).setup)
cli.add_command(__import__("overcast.cli.login_cmd", fromlist=["login"]).login)
cli.add_command(__import__("overcast.cli.env_cmd", fromlist=["env"]).env)

try:
    from overcast.cli.localcloud_cmd import local_cloud
except ModuleNotFoundError as exc:  # not there yet; any other import error must surface
    if exc.name != "overcast.cli.localcloud_cmd":
        raise
else:
    cli.add_command(local_cloud, "local-cloud")


if __name__ == "__main__":
    cli()
