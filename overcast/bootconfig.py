"""The document a VM boots with: what its agent needs to join its cluster.

EC2 user data is a cloud-init document (`to_cloud_init()`): cloud-init writes the boot document
to /etc/overcast/boot.json (mode 0600, root) and its runcmd starts the agent service installed
in the overcast image. The agent reads that file (`load()`), falling back to the IMDS user data,
which `from_user_data()` parses in either form (cloud-config or the bare JSON document).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
BOOT_FILE = "/etc/overcast/boot.json"
# Installed by overcast/agent/bootstrap.sh: starts overcast-agent.service under systemd, or runs
# the agent (and powers off after it) in the foreground where there is no init system.
START_COMMAND = "/usr/local/sbin/overcast-agent-start"
CLOUD_CONFIG_HEADER = "#cloud-config"
DEFAULT_SHUTDOWN_AFTER_UNREACHABLE = 20 * 60.0


@dataclass
class BootConfig:
    control_plane: str
    cluster_id: int
    cluster_token: str
    role: str  # "scheduler" or "worker"
    log_group: str
    region: str
    scheduler_port: int = 8786
    dashboard_port: int = 8787
    worker_resources: dict[str, float] = field(default_factory=dict)
    nthreads: int | None = None
    # Seconds between heartbeats (the agent adds +-20% jitter); docs/liveness.md.
    heartbeat_interval: float = 15.0
    # PEM of the CA(s) the agent trusts for `control_plane` (a self-signed or private CA);
    # None: the VM's system CA bundle.
    control_plane_ca: str | None = None
    # The instance-side watchdog: the agent exits (and the VM powers off) after this long
    # without an answer from the control plane.
    shutdown_after_unreachable: float = DEFAULT_SHUTDOWN_AFTER_UNREACHABLE
    # The cluster's software environment: the agent runs dask inside this image (pulled with
    # `registry`: {"kind": "ecr"|"docker_hub", "server", "region", "username", "token"}).
    software_image: str | None = None
    registry: dict[str, Any] | None = None

    def __repr__(self) -> str:  # the token is a secret: never in a log line
        return (f"BootConfig(cluster_id={self.cluster_id}, role={self.role!r}, "
                f"control_plane={self.control_plane!r}, token=<redacted>)")

    def to_user_data(self) -> str:
        """The bare JSON boot document (the content of /etc/overcast/boot.json)."""
        return json.dumps({"overcast": FORMAT_VERSION, **asdict(self)})

    def to_cloud_init(self) -> str:
        """EC2 user data: a #cloud-config document carrying the boot document."""
        import yaml

        doc = {
            "write_files": [{
                "path": BOOT_FILE, "permissions": "0600", "owner": "root:root",
                "content": self.to_user_data(),
            }],
            "runcmd": [[START_COMMAND]],
        }
        return CLOUD_CONFIG_HEADER + "\n" + yaml.safe_dump(doc, sort_keys=False, width=1 << 20)

    @classmethod
    def from_user_data(cls, text: str) -> BootConfig:
        """Parse EC2 user data: a #cloud-config carrying the boot document, or the bare JSON."""
        if text.lstrip().startswith(CLOUD_CONFIG_HEADER):
            text = _boot_file_of(text)
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"user data is not an overcast boot document: {exc}") from None
        if not isinstance(data, dict) or data.pop("overcast", None) != FORMAT_VERSION:
            raise ValueError("user data is not an overcast boot document (version 1)")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def _boot_file_of(text: str) -> str:
    import yaml

    doc = yaml.safe_load(text) or {}
    for entry in doc.get("write_files") or []:
        if isinstance(entry, dict) and entry.get("path") == BOOT_FILE:
            return str(entry.get("content", ""))
    raise ValueError(f"the cloud-config user data writes no {BOOT_FILE}")


def boot_file() -> Path:
    """Where cloud-init wrote the boot document (env OVERCAST_BOOT_FILE moves it, for tests)."""
    return Path(os.environ.get("OVERCAST_BOOT_FILE") or BOOT_FILE)


def load(user_data: str | None) -> BootConfig:
    """The boot document: the file cloud-init wrote, else the IMDS user data."""
    path = boot_file()
    if path.is_file():
        return BootConfig.from_user_data(path.read_text())
    if not user_data:
        raise ValueError(f"no {path} and no user data")
    return BootConfig.from_user_data(user_data)
