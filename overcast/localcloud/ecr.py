"""The local ECR: moto's control plane in front of a real registry server's data plane.

moto keeps ECR's API (repositories, IAM checks) but has no data plane: its
`GetAuthorizationToken` hands out a login for a host that does not exist and it never sees a
`docker push`. Here (as in AWS) the login and the repository URIs name the registry server,
and `DescribeImages` / `ListImages` first copy into moto what was pushed to the registry
(tags and manifests from the registry's own API), so boto3 lists exactly what is there.

Repositories live at `<registry host>/<account id>/<name>` (a real ECR host is per account;
one server serves every local account under an account-id prefix). One login (user "AWS")
opens the registry for every account: IAM on GetAuthorizationToken is what is checked, as
in AWS, but the data plane does not tell the accounts' logins apart (docs/local-cloud.md).
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.error
from datetime import UTC, datetime, timedelta
from typing import Any

from overcast.localcloud.registry import RegistryServer

log = logging.getLogger("overcast.localcloud.ecr")
USER = "AWS"
MANIFEST_TYPES = ", ".join((
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json"))

_active: dict[str, Any] = {"registry": None, "password": None}


def attach(registry: RegistryServer, password: str) -> None:
    """Make moto's ECR (this process) front `registry`; `password` is user AWS's."""
    _patch()
    _active.update(registry=registry, password=password)


def detach() -> None:
    _active.update(registry=None, password=None)


def _patch() -> None:
    from moto.ecr import models, responses

    if getattr(models.Repository, "_overcast_registry", False):
        return
    original_init = models.Repository.__init__

    def repository_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        registry = _active["registry"]
        if registry is not None:
            self.uri = f"{registry.host}/{self.registry_id}/{self.name}"

    models.Repository.__init__ = repository_init  # type: ignore[method-assign]
    models.Repository._overcast_registry = True  # type: ignore[attr-defined]

    original_token = responses.ECRResponse.get_authorization_token

    def get_authorization_token(self: Any) -> Any:
        registry = _active["registry"]
        if registry is None:
            return original_token(self)
        token = base64.b64encode(f"{USER}:{_active['password']}".encode()).decode()
        ids = self._get_param("registryIds") or [self.current_account]
        data = [{"authorizationToken": token, "proxyEndpoint": registry.url,
                 "expiresAt": datetime.now(UTC) + timedelta(hours=12)} for _ in ids]
        from moto.core.responses import ActionResult

        return ActionResult({"authorizationData": data})

    responses.ECRResponse.get_authorization_token = get_authorization_token  # type: ignore

    for method in ("describe_images", "list_images"):
        _sync_before(models.ECRBackend, method)


def _sync_before(cls: Any, method: str) -> None:
    original = getattr(cls, method)

    def wrapper(self: Any, repository_name: str, *args: Any, **kwargs: Any) -> Any:
        repo = self.repositories.get(repository_name)
        if repo is not None and _active["registry"] is not None:
            sync_repository(self, repo)
        return original(self, repository_name, *args, **kwargs)

    setattr(cls, method, wrapper)


def sync_repository(backend: Any, repo: Any) -> None:
    """Copy into moto every tag the registry has for this repository and moto lacks."""
    registry: RegistryServer = _active["registry"]
    path = f"{repo.registry_id}/{repo.name}"
    try:
        tags = registry.tags(path)
    except (OSError, urllib.error.HTTPError) as exc:
        log.warning("registry %s unreadable: %s", path, exc)
        return
    known = {t for image in repo.images for t in image.image_tags}
    for tag in tags:
        if tag in known:
            continue
        headers, manifest = registry.get(f"{path}/manifests/{tag}", accept=MANIFEST_TYPES)
        media_type = manifest.get("mediaType") or headers.get("Content-Type")
        try:
            backend.put_image(repo.name, json.dumps(manifest), tag, media_type,
                              headers.get("Docker-Content-Digest"))
        except Exception as exc:  # noqa: BLE001 - an odd manifest must not break the listing
            log.warning("could not list %s:%s: %s", path, tag, exc)
