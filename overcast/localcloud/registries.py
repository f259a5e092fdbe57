"""The local cloud's two registries: the local ECR's data plane and a Docker Hub stand-in.

Started and stopped with the local cloud. Docker Hub's stand-in has one user ("overcast")
whose access token is written, mode 0600, to `$OVERCAST_HOME/run/localcloud-dockerhub.json`
(`{"url", "username", "token"}`) for `overcast up` and the tests; the control plane reaches it
through `OVERCAST_DOCKER_HUB_URL`, its endpoint setting.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from overcast import settings
from overcast.localcloud import ecr
from overcast.localcloud.registry import BINARY, RegistryServer

log = logging.getLogger("overcast.localcloud.registries")
HUB_USER = "overcast"


def hub_file() -> Path:
    return settings.run_dir() / "localcloud-dockerhub.json"


def read_hub() -> dict[str, str] | None:
    try:
        return json.loads(hub_file().read_text())
    except (OSError, ValueError):
        return None


class Registries:
    """Both servers; `available` is False (and nothing runs) without docker-registry."""

    def __init__(self, write_state: bool = True) -> None:
        self.ecr: RegistryServer | None = None
        self.hub: RegistryServer | None = None
        self.hub_token: str | None = None
        self._write_state = write_state
        if shutil.which(BINARY) is None:
            log.warning("%s is not installed: no registries (`make engine` installs it)",
                        BINARY)
            return
        password = secrets.token_urlsafe(24)
        self.ecr = RegistryServer("ecr", {ecr.USER: password})
        try:
            self.hub_token = "dckr_pat_" + secrets.token_urlsafe(24)
            self.hub = RegistryServer("docker-hub", {HUB_USER: self.hub_token})
        except BaseException:
            self.ecr.stop()
            raise
        ecr.attach(self.ecr, password)
        if write_state:
            path = hub_file()
            path.unlink(missing_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"url": self.hub.url, "username": HUB_USER,
                           "token": self.hub_token}, f)

    @property
    def available(self) -> bool:
        return self.ecr is not None

    def state(self) -> dict[str, Any]:
        """For localcloud.json: addresses only, never a password."""
        if not self.available:
            return {}
        return {"ecr": self.ecr.url, "docker_hub": self.hub.url}

    def stop(self) -> None:
        ecr.detach()
        for server in (self.ecr, self.hub):
            if server is not None:
                server.stop()
        if self._write_state:
            hub_file().unlink(missing_ok=True)
