"""What a VPC gives an instance of the local cloud besides its disk: the machine's package
registries (pip and uv settings, the CA bundle), a package mirror (a pip cache shared by the
instances), and the cloud-init stand-in that boots it. Host files reach the container as bind
mounts, never as image VOLUMEs: `docker commit` (CreateImage) would copy those into the AMI.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from docker.types import Mount

log = logging.getLogger("overcast.localcloud.containers")

INIT = Path(__file__).with_name("instance_init.py")
INIT_IN_CONTAINER = "/usr/lib/overcast-localcloud/init.py"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PIP_FILES = ("/etc/pip.conf", "/etc/xdg/pip")
# The stand-in for a VPC's package mirror: a pip cache the local cloud owns, shared by its
# instances (mounted read-write at root's pip cache). Not part of any image: CreateImage commits
# the container's own layer, never a mount.
PIP_CACHE = Path(os.environ.get("OVERCAST_LOCALCLOUD_PIP_CACHE",
                                "/var/cache/overcast-localcloud/pip"))
PIP_CACHE_IN_CONTAINER = "/root/.cache/pip"
PASS_PREFIXES = ("PIP_", "UV_")
PASS_NAMES = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


def egress_env() -> dict[str, str]:
    """The machine's package-registry settings an instance gets (no host paths)."""
    env = {}
    for key, value in os.environ.items():
        if key.startswith(PASS_PREFIXES) or key in PASS_NAMES:
            if value.startswith("/") and value != CA_BUNDLE:  # a host path: not in the VM
                continue
            env[key] = value
    return env


def egress_mounts() -> dict[str, dict[str, str]]:
    mounts = {str(INIT): {"bind": INIT_IN_CONTAINER, "mode": "ro"}}
    for path in (CA_BUNDLE, *PIP_FILES):
        if os.path.exists(path):
            mounts[os.path.realpath(path)] = {"bind": path, "mode": "ro"}
    try:
        PIP_CACHE.mkdir(parents=True, exist_ok=True)
        mounts[str(PIP_CACHE)] = {"bind": PIP_CACHE_IN_CONTAINER, "mode": "rw"}
    except OSError as exc:  # no mirror: instances download from the index, only slower
        log.warning("no package cache for instances (%s): %s", PIP_CACHE, exc)
    return mounts


def bind_mounts(mounts: dict[str, dict[str, str]]) -> list[Mount]:
    """`{source: {"bind": target, "mode": "ro"|"rw"}}` as bind mounts (see the module doc)."""
    return [Mount(target=m["bind"], source=src, type="bind", read_only=m["mode"] == "ro")
            for src, m in mounts.items()]
