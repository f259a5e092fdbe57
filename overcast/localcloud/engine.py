"""The container engine behind the local cloud's instances: Debian's `docker.io` (dockerd).

`connect()` uses the engine that answers on DOCKER_HOST or the default socket; when none
answers it starts `dockerd` itself, detached, and leaves it running when the local cloud exits
(a machine service, like the engine on a VM): several local clouds (tests, developers) share
one engine, and each removes only its own containers, by label.

The engine never gets a bridge network: `--bridge=none --iptables=false --ip-masq=false`.
A default bridge would take a private-range address (172.17.0.0/16), and no traffic may go to
private-range addresses on these machines; every instance container uses `--network host`
and binds only its own 127.x.y.z address.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("overcast.localcloud.engine")

DOCKERD_ARGS = ("--bridge=none", "--iptables=false", "--ip-masq=false")
PIDFILE = Path("/var/run/overcast-dockerd.pid")
LOGFILE = Path("/var/log/overcast-dockerd.log")
START_TIMEOUT = 60.0


class EngineUnavailable(RuntimeError):
    """No container engine answers and none could be started; the message says what to do."""


def _client(timeout: float = 5.0) -> Any:
    import docker

    return docker.from_env(timeout=timeout)


def answers() -> bool:
    try:
        client = _client(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 (DockerException, refused, no socket: all mean no engine)
        return False


def dockerd_command() -> list[str]:
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    return [dockerd, *DOCKERD_ARGS, "--pidfile", str(PIDFILE)]


def start_dockerd(timeout: float = START_TIMEOUT) -> int:
    """Start dockerd detached (its own session: it outlives this process); return its pid."""
    command = dockerd_command()
    if not Path(command[0]).exists():
        raise EngineUnavailable("no container engine: install Debian's docker.io "
                                "(`make engine`, or apt-get install docker.io)")
    if os.geteuid() != 0:
        raise EngineUnavailable("no container engine answers and only root can start dockerd: "
                                f"start it as root with `{' '.join(command)}`")
    LOGFILE.parent.mkdir(parents=True, exist_ok=True)
    with open(LOGFILE, "ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers():
            log.info("started dockerd (pid %s, log %s)", proc.pid, LOGFILE)
            return proc.pid
        if proc.poll() is not None:
            # Another local cloud may have started one at the same moment (the pidfile is
            # taken): use that one.
            if answers():
                return 0
            raise EngineUnavailable(f"dockerd exited with code {proc.returncode}; "
                                    f"see {LOGFILE}")
        time.sleep(0.2)
    raise EngineUnavailable(f"dockerd did not answer within {timeout:.0f} s; see {LOGFILE}")


def connect(start: bool = True) -> Any:
    """A docker client for a running engine, starting dockerd first when none answers."""
    if not answers():
        if not start:
            raise EngineUnavailable("no container engine answers")
        start_dockerd()
    check_no_bridge()
    return _client(timeout=120)


def check_no_bridge() -> None:
    """Refuse an engine that owns a docker0 bridge: it hands out private-range addresses."""
    if Path("/sys/class/net/docker0").exists():
        log.error("the container engine has a docker0 bridge; restart dockerd with %s. "
                  "Instances use host networking only.", " ".join(DOCKERD_ARGS))
