"""The stock Debian 12 AMI of the local cloud: a container image built from Debian's packages.

On AWS, Debian publishes its bookworm AMIs (owner 136693071363) and an SSM public parameter
naming the newest one. Here the same AMI is a root file system made by `mmdebstrap` from the
machine's Debian sources (no image registry is reachable), imported into the container engine,
cached there under a tag keyed by the recipe (packages + files below), so only the first local
cloud on a machine pays the build (~20-30 s).

What is in it: Debian 12 minbase plus what a stock Debian cloud image has that instances rely
on: python3 (+ venv, yaml: cloud-init's dependency, used by the local cloud's cloud-init
stand-in), ca-certificates and curl. Not systemd: a container has no init system of its own,
so the image gets small `poweroff`/`shutdown`/`halt` scripts that ask PID 1 (instance_init.py)
to power the instance off, the local stand-in for systemd's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("overcast.localcloud.stockimage")

DEBIAN_OWNER = "136693071363"  # Debian's AWS account: the owner of its official AMIs
SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "python3-yaml", "ca-certificates", "curl")
RECIPE_VERSION = 1  # bump when the build changes in a way the inputs below do not show
BUILD_DATE = "20261101"
AMI_NAME = f"debian-12-amd64-{BUILD_DATE}-{RECIPE_VERSION}"
SSM_PARAMETERS = ("/aws/service/debian/release/12/latest/amd64",
                  "/aws/service/debian/release/bookworm/latest/amd64")
REPOSITORY = "overcast-localcloud/debian-12"

POWEROFF = """#!/bin/sh
# The local cloud's stand-in for systemd's poweroff/shutdown/halt: an instance is a container
# whose PID 1 is the local cloud's init (cloud-init stand-in); SIGTERM to it powers the
# instance off, and the local cloud then shows the instance stopped/terminated as EC2 would.
case "$(basename "$0") $*" in
  *reboot*|*" -r"*) echo "reboot is not supported in the local cloud" >&2; exit 1 ;;
esac
kill -TERM 1
"""
POWER_COMMANDS = ("poweroff", "shutdown", "halt")


def cache_key() -> str:
    recipe = {"suite": SUITE, "variant": "minbase", "packages": PACKAGES,
              "poweroff": POWEROFF, "commands": POWER_COMMANDS, "version": RECIPE_VERSION}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def image_tag() -> str:
    return f"{REPOSITORY}:{cache_key()}"


def ami_id() -> str:
    """Stable per recipe: the same id in every region and account (one AMI document)."""
    return "ami-0" + hashlib.sha1(f"{AMI_NAME}/{cache_key()}".encode()).hexdigest()[:16]


def ami_document() -> dict[str, Any]:
    """The AMI as moto's AMI list holds it (see motoserver.ami_document)."""
    return {
        "ami_id": ami_id(),
        "name": AMI_NAME,
        "description": "Debian 12 (bookworm) amd64, built from Debian's packages",
        "owner_id": DEBIAN_OWNER,
        "public": True,
        "state": "available",
        "architecture": "x86_64",
        "virtualization_type": "hvm",
        "hypervisor": "xen",
        "root_device_type": "ebs",
        "root_device_name": "/dev/xvda",
        "image_type": "machine",
        "image_location": f"amazon/{AMI_NAME}",
        "creation_date": f"{BUILD_DATE[:4]}-{BUILD_DATE[4:6]}-{BUILD_DATE[6:]}T00:00:00.000Z",
        "boot_mode": "uefi-preferred",
    }


def cache_dir() -> Path:
    path = Path("/var/cache/overcast") if os.geteuid() == 0 else Path(
        tempfile.gettempdir()) / f"overcast-cache-{os.geteuid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """One build per machine at a time: local clouds started together wait for the first."""
    with open(cache_dir() / "debian-12.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def has_image(client: Any, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure(client: Any) -> tuple[str, float]:
    """The stock image's tag, built when the engine does not have it; (tag, seconds built)."""
    tag = image_tag()
    if has_image(client, tag):
        return tag, 0.0
    with _build_lock():
        if has_image(client, tag):  # built by another local cloud while we waited
            return tag, 0.0
        _drop_stale_builds()
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            tar = Path(tmp) / "rootfs.tar"
            mmdebstrap(tar, Path(tmp))
            repository, _, version = tag.partition(":")
            client.api.import_image_from_file(str(tar), repository=repository, tag=version)
        took = time.monotonic() - started
        log.info("built the stock Debian 12 image %s in %.1f s", tag, took)
        return tag, took


def mmdebstrap(out: Path, workdir: Path) -> None:
    binary = shutil.which("mmdebstrap")
    if binary is None:
        raise RuntimeError("mmdebstrap is missing: install Debian's mmdebstrap "
                           "(`make engine`, or apt-get install mmdebstrap)")
    script = workdir / "poweroff"
    script.write_text(POWEROFF)
    hooks = [f"--customize-hook=upload {script} /usr/sbin/poweroff",
             '--customize-hook=chmod 755 "$1/usr/sbin/poweroff"']
    for name in POWER_COMMANDS[1:]:
        hooks.append(f'--customize-hook=ln -sf poweroff "$1/usr/sbin/{name}"')
    command = [binary, "--variant=minbase", "--quiet", f"--include={','.join(PACKAGES)}",
               *hooks, SUITE, str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900,
                          preexec_fn=_die_with_parent)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-15:])
        raise RuntimeError(f"mmdebstrap failed (exit {proc.returncode}):\n{tail}")


def _die_with_parent() -> None:
    """SIGTERM mmdebstrap when the local cloud building it dies (Linux prctl), so a stopped
    local cloud leaves no build running."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _drop_stale_builds(older_than: float = 3600.0) -> None:
    """Half-made build directories of local clouds that were killed mid-build."""
    for path in cache_dir().glob("tmp*"):
        with contextlib.suppress(OSError):
            if path.is_dir() and time.time() - path.stat().st_mtime > older_than:
                shutil.rmtree(path, ignore_errors=True)
