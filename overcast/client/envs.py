"""Software environments from Python: create, list, show, delete (twins of `overcast env`)."""

from __future__ import annotations

import os
from typing import Any

from overcast.client.api import Api, seg


def envs_path(slug: str, name: str | None = None) -> str:
    base = f"/accounts/{seg(slug)}/software-environments"
    return base if name is None else f"{base}/{seg(name)}"


def spec_from(requirements: str | os.PathLike | None = None, pip: list[str] | None = None,
              container: str | None = None) -> dict[str, Any]:
    """The spec of exactly one of: a requirements file, pip requirements, a container image."""
    given = [x for x in (requirements, pip, container) if x]
    if len(given) != 1:
        raise ValueError("Give exactly one of requirements=, pip= or container=.")
    if requirements:
        with open(requirements, encoding="utf-8") as f:
            return {"kind": "requirements", "requirements": f.read()}
    if pip:
        if isinstance(pip, str):
            pip = [pip]
        return {"kind": "pip", "packages": list(pip)}
    return {"kind": "container", "image": container}


def create_software_environment(name: str, requirements: str | os.PathLike | None = None,
                                pip: list[str] | None = None, container: str | None = None,
                                account: str | None = None, *,
                                api: Api | None = None) -> dict[str, Any]:
    """Create software environment `name` (a new version if it exists with another spec).

    Exactly one of `requirements` (a requirements.txt path), `pip` (["pandas==2.2.3", ...])
    or `container` (an image with dask and distributed). Returns the environment document
    (`version`, `lock_hash`, `build_state`, `image_uri`, ...); its image is built once per
    lock and reused by every environment and cluster with the same lock.
    """
    api = api or Api()
    slug = api.account(account)
    body = {"name": name, "spec": spec_from(requirements, pip, container)}
    return api.request("POST", envs_path(slug), json=body)


def list_software_environments(account: str | None = None, *,
                               api: Api | None = None) -> dict[str, dict[str, Any]]:
    """{name: environment (latest version)} of an account."""
    api = api or Api()
    slug = api.account(account)
    return {e["name"]: e for e in api.get(envs_path(slug))}


def get_software_environment(name: str, account: str | None = None,
                             version: int | None = None, *,
                             api: Api | None = None) -> dict[str, Any]:
    """One environment (latest version unless `version`), with its spec and lock."""
    api = api or Api()
    slug = api.account(account)
    return api.get(envs_path(slug, name), version=version)


def delete_software_environment(name: str, account: str | None = None, *,
                                api: Api | None = None) -> dict[str, Any]:
    """Delete every version of `name` (images stay in the registry, shared by lock hash)."""
    api = api or Api()
    slug = api.account(account)
    return api.request("DELETE", envs_path(slug, name))
