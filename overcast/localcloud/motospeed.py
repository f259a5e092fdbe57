"""moto made faster for 1,000-instance launches (hollow load tests, docs/local-cloud.md).

An instance's constructor looks up its AMI with `describe_images(filters={"image-id": id})`,
which runs the filter over every AMI moto knows (~1,300 public ones): ~13 ms per instance
(profiled), so most of a RunInstances of 1,000. The same answer comes from moto's AMI dict.
What remains is moto's generic XML serializer: ~5-10 ms per instance in every RunInstances or
DescribeInstances response (not touched here).

A resource's tags (`TaggedEC2Resource.get_tags`, read for every instance a DescribeInstances
filters by tag or answers) ran `describe_tags` with a resource-id regex over every tag of every
resource: quadratic, ~30 s per DescribeInstances of 1,000 tagged instances (profiled), which
held the reconciler's passes. The same list comes from the backend's tag dict of that resource.

Behaviour is unchanged: any other call, or an id moto does not hold, takes moto's own path.
`apply()` is idempotent.
"""

from __future__ import annotations

from typing import Any


def apply() -> None:
    _ami_by_id()
    _tags_by_resource()


def _tags_by_resource() -> None:
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

    if getattr(TaggedEC2Resource.get_tags, "_overcast", False):
        return

    def get_tags(self: Any) -> list[dict[str, str]]:
        rid = getattr(self, "id", None)
        if not rid:
            return []
        kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(rid), "")
        return [{"resource_id": rid, "key": k, "value": v, "resource_type": kind}
                for k, v in dict(self.ec2_backend.tags.get(rid) or {}).items()]

    get_tags._overcast = True  # type: ignore[attr-defined]
    TaggedEC2Resource.get_tags = get_tags  # type: ignore[method-assign]


def _ami_by_id() -> None:
    from moto.ec2.models.amis import AmiBackend

    original = AmiBackend.describe_images
    if getattr(original, "_overcast", False):
        return

    def describe_images(self: Any, ami_ids: list[str] | None = None,
                        filters: dict[str, Any] | None = None,
                        exec_users: list[str] | None = None,
                        owners: list[str] | None = None) -> list[Any]:
        if (not ami_ids and not exec_users and not owners and filters
                and list(filters) == ["image-id"] and isinstance(filters["image-id"], str)):
            ami = self.amis.get(filters["image-id"])
            if ami is not None:
                return [ami]
        return original(self, ami_ids=ami_ids, filters=filters, exec_users=exec_users,
                        owners=owners)

    describe_images._overcast = True  # type: ignore[attr-defined]
    AmiBackend.describe_images = describe_images  # type: ignore[method-assign]
