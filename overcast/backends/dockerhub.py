"""Docker Hub (or any registry speaking the Distribution API): check a login for real.

`check_login` asks `GET /v2/` as the registry wants it: Basic auth directly, or (Docker Hub)
the Bearer token flow: the 401's `WWW-Authenticate: Bearer realm=...,service=...` names a
token service, which must grant a token for push+pull on the repository with the user's
access token. Messages name the registry and the user, never the token.

The registry's address is `OVERCAST_DOCKER_HUB_URL` (default Docker Hub's), an endpoint
setting like `AWS_ENDPOINT_URL`: the local cloud's stand-in sets it.
"""

from __future__ import annotations

import os
import re

import httpx

DEFAULT_URL = "https://registry-1.docker.io"
TIMEOUT = 10.0
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)+$")


class RegistryLoginError(Exception):
    """The registry refused the login or could not be asked; the message says which."""


def registry_url() -> str:
    return (os.environ.get("OVERCAST_DOCKER_HUB_URL") or DEFAULT_URL).rstrip("/")


def registry_host(url: str | None = None) -> str:
    url = url or registry_url()
    host = url.split("://", 1)[-1]
    return "docker.io" if host == "registry-1.docker.io" else host


def check_repository(repository: str) -> str:
    if not _REPOSITORY.match(repository or ""):
        raise RegistryLoginError(
            f"Docker Hub repository {repository!r} is not valid: use 'namespace/name' in "
            f"lowercase, e.g. 'myteam/overcast-envs'.")
    return repository


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


def check_login(user: str, token: str, repository: str, url: str | None = None, *,
                transport: httpx.BaseTransport | None = None) -> None:
    """Raise RegistryLoginError unless `user` + `token` may push to `repository`.
    (`transport` is for tests.)"""
    url = (url or registry_url()).rstrip("/")
    name = registry_host(url)
    try:
        with httpx.Client(timeout=TIMEOUT, transport=transport) as http:
            first = http.get(url + "/v2/")
            if first.status_code == 200:
                return  # an open registry (no auth at all)
            scheme, params = _challenge(first.headers.get("WWW-Authenticate", ""))
            if first.status_code != 401 or scheme not in ("basic", "bearer"):
                raise RegistryLoginError(f"The registry {name} answered HTTP "
                                         f"{first.status_code} to /v2/: is it a registry?")
            if scheme == "basic":
                ok = http.get(url + "/v2/", auth=(user, token)).status_code == 200
            else:
                scope = f"repository:{repository}:push,pull"
                got = http.get(params.get("realm", ""), auth=(user, token),
                               params={"service": params.get("service", ""), "scope": scope})
                ok = got.status_code == 200 and bool(
                    (got.json() or {}).get("token") or (got.json() or {}).get("access_token"))
    except httpx.HTTPError as exc:
        raise RegistryLoginError(f"Could not reach the registry {name} "
                                 f"({type(exc).__name__}).") from None
    if not ok:
        raise RegistryLoginError(
            f"The registry {name} refused the login of {user!r} with that access token: "
            f"check registry_username and registry_access_token (a Docker Hub access token "
            f"with read/write scope).")


MANIFEST_TYPES = ", ".join((
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json"))


def has_tag(user: str, token: str, repository: str, tag: str, url: str | None = None) -> bool:
    """Whether `repository:tag` is in the registry (a HEAD of its manifest, logged in as
    `user`): an image an earlier build pushed is reused, not built again."""
    url = (url or registry_url()).rstrip("/")
    path = f"{url}/v2/{repository}/manifests/{tag}"
    headers = {"Accept": MANIFEST_TYPES}
    try:
        with httpx.Client(timeout=TIMEOUT) as http:
            first = http.head(path, headers=headers)
            if first.status_code == 401:
                scheme, params = _challenge(first.headers.get("WWW-Authenticate", ""))
                if scheme == "basic":
                    first = http.head(path, headers=headers, auth=(user, token))
                else:
                    got = http.get(params.get("realm", ""), auth=(user, token), params={
                        "service": params.get("service", ""),
                        "scope": f"repository:{repository}:pull"}).json() or {}
                    bearer = got.get("token") or got.get("access_token") or ""
                    first = http.head(path, headers={**headers,
                                                     "Authorization": f"Bearer {bearer}"})
    except httpx.HTTPError as exc:
        raise RegistryLoginError(f"Could not reach the registry {registry_host(url)} "
                                 f"({type(exc).__name__}).") from None
    return first.status_code == 200
