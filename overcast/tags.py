"""The tags every AWS resource overcast creates carries, and the filters that find them.

Every resource carries `overcast:deployment=<id>`, the id of the control plane that made it, so
two control planes in one AWS account (staging, production) never find, adopt or delete each
other's resources: every look-up built from `resource_tags` filters on it.
"""

from __future__ import annotations

import os
import re
import secrets

from overcast import settings

MANAGED = "overcast:managed"
ACCOUNT = "overcast:account"
CLUSTER = "overcast:cluster"
ROLE = "overcast:role"
DEPLOYMENT = "overcast:deployment"
OPERATOR = "operator"  # the overcast:account value of the hosted (shared) network
DEPLOYMENT_ENV = "OVERCAST_DEPLOYMENT_ID"
DEPLOYMENT_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_cache: dict[str, str] = {}


def check_deployment_id(value: str) -> str:
    if not DEPLOYMENT_RE.match(value or ""):
        raise ValueError(f"deployment id {value!r}: use 1-63 lowercase letters, digits or "
                         "dashes, starting with a letter or digit")
    return value


def deployment_id() -> str:
    """This control plane's id: `$OVERCAST_DEPLOYMENT_ID`, else made once and kept in
    `$OVERCAST_HOME/deployment-id` (so a restart keeps finding its own resources)."""
    env = os.environ.get(DEPLOYMENT_ENV)
    if env:
        return check_deployment_id(env)
    path = settings.home() / "deployment-id"
    key = str(path)
    if key not in _cache:
        if not path.exists():  # first start: write a new id atomically; the first link wins
            tmp = path.with_name(f".deployment-id.{os.getpid()}.{secrets.token_hex(4)}")
            tmp.write_text(f"d-{secrets.token_hex(6)}\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        _cache[key] = check_deployment_id(path.read_text().strip())
    return _cache[key]


def resource_tags(account: str, cluster_id: int | None = None, **extra: str) -> dict[str, str]:
    tags = {MANAGED: "true", DEPLOYMENT: deployment_id(), ACCOUNT: account}
    if cluster_id is not None:
        tags[CLUSTER] = str(cluster_id)
    tags.update(extra)
    return tags


def ours(tags: dict[str, str] | list[dict[str, str]] | None) -> bool:
    """Made by overcast, and by this control plane: the only resources we adopt or delete."""
    found = from_aws(tags) if isinstance(tags, list) else dict(tags or {})
    return found.get(MANAGED) == "true" and found.get(DEPLOYMENT) == deployment_id()


def cluster_filter(cluster_id: int) -> dict[str, str]:
    """The tags that find one cluster's resources (of this control plane only)."""
    return {MANAGED: "true", DEPLOYMENT: deployment_id(), CLUSTER: str(cluster_id)}


def as_aws(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def from_aws(tag_list: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tag_list or []}


def filters(tags: dict[str, str]) -> list[dict]:
    return [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]
