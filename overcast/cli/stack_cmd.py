"""`overcast up`, `down`, `status` and `server`: run overcast on this machine."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import time
from typing import Any

import click
import httpx
from rich.live import Live
from rich.table import Table

from overcast import settings
from overcast.cli import common
from overcast.cli.common import err, fail, out

DEFAULT_PORT = 8600
DEFAULT_LOCAL_CLOUD_PORT = 4599
START_TIMEOUT = 90.0
# The local cloud's operator account keys (test keys; a real deployment uses its own).

class Component:
    """One child process of `overcast up` and what the status display shows of it."""

    def __init__(self, key: str, label: str):
        self.key, self.label = key, label
        self.state, self.detail = "waiting", ""
        self.proc: subprocess.Popen | None = None


def _log_path(component: str):
    return settings.logs_dir() / f"{component}.log"


def _spawn(component: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    log = open(_log_path(component), "ab")  # noqa: SIM115 - handed to the child
    # A new session: Ctrl-C in this terminal reaches only us; we stop children in order.
    proc = subprocess.Popen([sys.executable, "-m", "overcast.cli.main", *args], env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()
    common.write_pid(component, proc.pid)
    return proc


def _tail(component: str, lines: int = 8) -> str:
    try:
        text = _log_path(component).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join(text)


def _answers(url: str, ok_only: bool = False) -> bool:
    try:
        response = httpx.get(url, timeout=2.0)
    except httpx.HTTPError:
        return False
    return response.is_success if ok_only else True


def _render(components: list[Component]) -> Table:
    table = Table.grid(padding=(0, 2))
    style = {"waiting": "yellow", "starting": "yellow", "ready": "green", "failed": "red"}
    for c in components:
        table.add_row(c.label, f"[{style.get(c.state, '')}]{c.state}[/]", c.detail)
    return table


def _wait(component: Component, check, refresh, timeout: float = START_TIMEOUT) -> Any:
    """Poll `check()` until it returns a truthy value; fail if the child exits or times out."""
    deadline = time.monotonic() + timeout
    component.state = "starting"
    while time.monotonic() < deadline:
        refresh()
        if component.proc is not None and component.proc.poll() is not None:
            component.state = "failed"
            refresh()
            fail(f"The {component.label} exited (code {component.proc.returncode}). Last lines "
                 f"of {_log_path(component.key)}:\n{_tail(component.key)}")
        result = check()
        if result:
            component.state = "ready"
            refresh()
            return result
        time.sleep(0.2)
    component.state = "failed"
    refresh()
    fail(f"The {component.label} did not answer within {timeout:.0f} s; see "
         f"{_log_path(component.key)}.")


def start_stack(port: int = DEFAULT_PORT, local_cloud_port: int = DEFAULT_LOCAL_CLOUD_PORT,
                quiet: bool = False) -> dict[str, Any]:
    """Start (or reuse) the local cloud and the control plane; configure the client."""
    lc, srv = Component("localcloud", "local cloud"), Component("server", "control plane")
    components = [lc, srv]
    live = Live(_render(components), console=err, transient=False) \
        if err.is_terminal and not quiet else None
    printed: dict[str, str] = {}

    def refresh() -> None:
        if live is not None:
            live.update(_render(components))
            return
        for c in components:  # plain output: one line per change
            if not quiet and printed.get(c.key) != c.state:
                printed[c.key] = c.state
                err.print(f"{c.label}: {c.state} {c.detail}".rstrip())

    if live is not None:
        live.start()
    try:
        # 1. The local cloud (moto + instance runner), unless it already runs.
        lc_pid = common.running_pid("localcloud")
        if lc_pid is None:
            # IAM enforced, as on AWS: wrong keys are refused, every call is checked.
            lc.proc = _spawn("localcloud", ["local-cloud", "--port", str(local_cloud_port),
                                            "--enforce-iam"], dict(os.environ))
            lc_pid = lc.proc.pid

        def localcloud_ready() -> dict | None:
            info = common.localcloud_info()
            if not info or info.get("pid") not in (None, lc_pid) or not info.get("endpoint"):
                return None
            if not _answers(info["endpoint"]):
                return None
            from overcast.localcloud.main import read_operator_keys

            if read_operator_keys() is None:  # written just before localcloud.json
                return None
            lc.detail = info["endpoint"]
            return info

        lc_info = _wait(lc, localcloud_ready, refresh)
        lc.detail = lc_info["endpoint"]
        if not lc_info.get("enforce_iam"):
            lc.detail += " (IAM NOT enforced: it was started with --no-enforce-iam)"

        # 2. The control plane, pointed at the local cloud with the operator's keys.
        url = f"http://127.0.0.1:{port}"
        if common.running_pid("server") is None:
            from overcast.localcloud.main import read_operator_keys

            # The local cloud's operator admin: under enforcement only IAM-made keys sign.
            operator = read_operator_keys()
            if operator is None:
                fail("The local cloud wrote no operator keys (run/localcloud-operator.json); "
                     "stop it (`overcast down`) and run `overcast up` again.")
            env = {**os.environ, "AWS_ENDPOINT_URL": lc_info["endpoint"],
                   "AWS_DEFAULT_REGION": "us-east-1",
                   "AWS_ACCESS_KEY_ID": operator["access_key_id"],
                   "AWS_SECRET_ACCESS_KEY": operator["secret_access_key"]}
            hub = (lc_info.get("registries") or {}).get("docker_hub")
            if hub:  # the local cloud's Docker Hub stand-in (the registry's endpoint setting)
                env["OVERCAST_DOCKER_HUB_URL"] = hub
            if lc_info.get("identity_cert"):  # as AWS's per-region certificate is configured
                env["OVERCAST_IDENTITY_CERTS"] = lc_info["identity_cert"]
            srv.proc = _spawn("server", ["server", "--host", "127.0.0.1", "--port", str(port)],
                              env)
        else:
            url = common.read_stack().get("server", url)
        srv.detail = url
        _wait(srv, lambda: _answers(f"{url}/api/v1/health", ok_only=True), refresh)
    except BaseException:
        # Leave nothing half-started behind: stop what this call spawned.
        for c in components:
            if c.proc is not None and c.proc.poll() is None:
                common.stop_pid(c.proc.pid)
                common.pid_file(c.key).unlink(missing_ok=True)
        raise
    finally:
        if live is not None:
            live.stop()

    account = _configure(url)
    stack = {"server": url, "local_cloud": lc_info["endpoint"], "account": account,
             "server_pid": common.read_pid("server"),
             "localcloud_pid": common.read_pid("localcloud")}
    common.stack_file().write_text(json.dumps(stack, indent=2))
    return stack


def _configure(url: str) -> str:
    """Make sure the client config has this server and a working token (first `up`)."""
    import dask.config

    from overcast.client import config

    config.register_defaults()
    server, token = dask.config.get("overcast.server", None), dask.config.get("overcast.token",
                                                                              None)
    if server == url and token:
        try:
            response = httpx.get(f"{url}/api/v1/me", timeout=5.0,
                                 headers={"Authorization": f"Bearer {token}"})
            if response.is_success:
                return dask.config.get("overcast.account", None) or \
                    response.json().get("default_account")
        except httpx.HTTPError:
            pass
    from overcast.server.bootstrap import ensure_first_user

    slug, token = ensure_first_user(getpass.getuser())
    path = config.write_user_config({"server": url, "token": token, "account": slug})
    err.print(f"Configured the client in {path} (account [bold]{slug}[/]).")
    return slug


def stop_stack() -> list[str]:
    """Stop the control plane, then the local cloud. Returns what was stopped."""
    stopped = []
    for component in ("server", "localcloud"):
        pid = common.running_pid(component)
        if pid is not None:
            common.stop_pid(pid)
            stopped.append(component)
        common.pid_file(component).unlink(missing_ok=True)
    common.stack_file().unlink(missing_ok=True)
    return stopped


def stack_status() -> dict[str, Any]:
    import dask.config

    from overcast.client import config

    config.register_defaults()
    stack = common.read_stack()
    lc = common.localcloud_info() or {}
    lc_pid = common.running_pid("localcloud")
    srv_pid = common.running_pid("server")
    url = stack.get("server") or dask.config.get("overcast.server", None)
    healthy = bool(url) and _answers(f"{url}/api/v1/health", ok_only=True)
    return {
        "local_cloud": {"running": lc_pid is not None, "pid": lc_pid,
                        "endpoint": lc.get("endpoint") if lc_pid else None},
        "server": {"running": srv_pid is not None or healthy, "pid": srv_pid, "url": url,
                   "healthy": healthy},
        "client": {"server": dask.config.get("overcast.server", None),
                   "account": dask.config.get("overcast.account", None),
                   "token_configured": bool(dask.config.get("overcast.token", None)),
                   "config_file": config.user_config_path()},
        "home": str(settings.home()),
    }


@click.command()
@click.option("--detach", "-d", is_flag=True, help="Return once both are ready.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, help="Control plane port.")
@click.option("--local-cloud-port", default=DEFAULT_LOCAL_CLOUD_PORT, show_default=True,
              help="Local cloud (moto) port.")
def up(detach: bool, port: int, local_cloud_port: int) -> None:
    """Start the local cloud and the control plane, and configure this client."""
    stack = start_stack(port, local_cloud_port)
    out.print(f"[green]overcast is up[/]: control plane {stack['server']}, "
              f"local cloud {stack['local_cloud']}, account {stack['account']}.")
    out.print(f"Logs in {settings.logs_dir()}.")
    if detach:
        out.print("Stop it with `overcast down`.")
        return
    out.print("Press Ctrl-C to stop.")
    try:
        while True:
            for component in ("server", "localcloud"):
                if common.running_pid(component) is None:
                    stop_stack()
                    fail(f"The {component} stopped; see {_log_path(component)}.")
            time.sleep(1.0)
    except KeyboardInterrupt:
        err.print("Stopping...")
        stop_stack()
        out.print("overcast is down.")


@click.command()
def down() -> None:
    """Stop the control plane and the local cloud started by `overcast up`."""
    stopped = stop_stack()
    out.print("Stopped: " + ", ".join(stopped) if stopped else "Nothing was running.")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(as_json: bool) -> None:
    """Is overcast running on this machine, and where? Exit code 3 if not."""
    info = stack_status()
    up_ = info["server"]["running"] and info["server"]["healthy"]
    if as_json:
        common.print_json(info)
    else:
        lc, srv, client = info["local_cloud"], info["server"], info["client"]
        mark = {True: "[green]running[/]", False: "[red]not running[/]"}
        out.print(f"control plane: {mark[srv['healthy']]} {srv['url'] or ''}")
        out.print(f"local cloud:   {mark[lc['running']]} {lc['endpoint'] or ''}")
        out.print(f"client:        server {client['server']}, account {client['account']}, "
                  f"token {'set' if client['token_configured'] else 'not set'}")
    if not up_:
        raise click.exceptions.Exit(common.EXIT_NOT_CONFIGURED)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=DEFAULT_PORT, show_default=True)
@click.option("--record-aws-actions", type=click.Path(dir_okay=False), default=None,
              help="Append every AWS action the control plane calls to this file (JSON lines).")
@click.option("--deployment-id", default=None,
              help="This control plane's id, tagged on everything it makes in AWS (default: "
                   "made once, kept in OVERCAST_HOME/deployment-id; env OVERCAST_DEPLOYMENT_ID).")
@click.option("--public-url", default=None, metavar="URL",
              help="The address VMs reach this control plane at (boot document's "
                   "control_plane), e.g. https://overcast.example.com. Default: env "
                   "OVERCAST_PUBLIC_URL, else http(s)://HOST:PORT. See docs/boot-path.md.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Serve HTTPS with this certificate (PEM, with its chain).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The private key of --tls-cert (PEM).")
@click.option("--public-ca", type=click.Path(exists=True, dir_okay=False), default=None,
              help="PEM CA(s) VMs trust for --public-url (default: the --tls-cert file; "
                   "without either, the VMs' system CAs).")
def server(host: str, port: int, record_aws_actions: str | None, deployment_id: str | None,
           public_url: str | None, tls_cert: str | None, tls_key: str | None,
           public_ca: str | None) -> None:
    """Run the control plane (API, dashboard, reconciler) in the foreground."""
    from overcast import tags

    if deployment_id:
        try:
            os.environ[tags.DEPLOYMENT_ENV] = tags.check_deployment_id(deployment_id)
        except ValueError as exc:
            fail(f"--{exc}")
    err.print(f"deployment id {tags.deployment_id()} (tagged on every AWS resource it makes)")
    if record_aws_actions:
        os.environ["OVERCAST_RECORD_AWS_ACTIONS"] = os.path.abspath(record_aws_actions)
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("Give --tls-cert and --tls-key together.")
    try:
        from overcast.server.app import serve
    except ImportError as exc:
        fail(f"The control plane cannot be loaded ({exc}); reinstall overcast.")
    serve(host, port, public=public_url, tls_cert=tls_cert, tls_key=tls_key,
          public_ca=public_ca)
