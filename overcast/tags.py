"""The tags every AWS resource overcast creates carries, and the filters that find them."""

from __future__ import annotations

MANAGED = "overcast:managed"
ACCOUNT = "overcast:account"
CLUSTER = "overcast:cluster"
ROLE = "overcast:role"
OPERATOR = "operator"  # the overcast:account value of the hosted (shared) network


def resource_tags(account: str, cluster_id: int | None = None, **extra: str) -> dict[str, str]:
    tags = {MANAGED: "true", ACCOUNT: account}
    if cluster_id is not None:
        tags[CLUSTER] = str(cluster_id)
    tags.update(extra)
    return tags


def as_aws(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def from_aws(tag_list: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tag_list or []}


def filters(tags: dict[str, str]) -> list[dict]:
    return [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]
