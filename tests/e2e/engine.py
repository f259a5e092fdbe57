"""A container engine for e2e tests: the one that answers, else a dockerd started here.

A dockerd started here runs as the local-cloud notes require (`--bridge=none
--iptables=false --ip-masq=false`: no bridge, no private-range addresses), with its own
socket, data root and pid file under a temp dir, and is stopped by its pid afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager


def answers(docker: list[str]) -> bool:
    try:
        return subprocess.run([*docker, "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextmanager
def engine() -> Iterator[list[str] | None]:
    """The docker command line to use (None: no engine can run here)."""
    if shutil.which("docker") is None:
        yield None
        return
    if answers(["docker"]):
        yield ["docker"]
        return
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        yield None
        return
    root = tempfile.mkdtemp(prefix="overcast-envs-dockerd-")
    sock = f"unix://{root}/docker.sock"
    proc = subprocess.Popen(
        ["dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false", "--host", sock,
         "--data-root", f"{root}/data", "--exec-root", f"{root}/exec",
         "--pidfile", f"{root}/docker.pid"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    docker = ["docker", "--host", sock]
    try:
        deadline = time.monotonic() + 60
        while not answers(docker):
            if proc.poll() is not None or time.monotonic() > deadline:
                yield None
                return
            time.sleep(0.5)
        yield docker
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)
