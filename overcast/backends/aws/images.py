"""The overcast VM image (AMI): the stock Debian 12 AMI, builder instances, CreateImage,
keeping the newest two, console output. One code path for AWS and the local cloud.

Every function is idempotent: a builder is found by its launch-token tag before one is
launched, an image by its name before CreateImage, so a crash anywhere is repaired by the
reconciler's next pass (overcast/reconciler/images.py drives these).
"""

from __future__ import annotations

import base64
import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from ... import tags as T
from .errors import AwsError, code_of, wrap
from .instances import LAUNCH_TOKEN, InstanceInfo, _describe, _info
from .network import Report, Resource, noop
from .session import AwsContext

# AWS publishes the current Debian 12 AMI of each region under this public SSM parameter.
DEBIAN_12_PARAMETER = "/aws/service/debian/release/12/latest/amd64"
IMAGE_PREFIX = "overcast-agent"
VERSION_TAG = "overcast:version"
BUILDER_ROLE = "image-builder"
KEEP = 2  # images kept per account and region: the newest, and the one before it
BUILDER_TYPE = "m6i.large"


@dataclass
class ImageInfo:
    image_id: str
    name: str
    state: str  # pending | available | failed | ...
    created: str
    version: str | None
    snapshots: list[str]
    reason: str | None = None


def image_name(version: str, when: datetime) -> str:
    """`overcast-agent-<version>-<timestamp>` (AMI names allow no ':'; milliseconds, so two
    builds never share a name, which CreateImage's idempotent look-up goes by)."""
    return f"{IMAGE_PREFIX}-{version}-{when.strftime('%Y%m%dT%H%M%S')}." \
           f"{when.microsecond // 1000:03d}Z"


def image_tags(account: str, version: str) -> dict[str, str]:
    return T.resource_tags(account, **{VERSION_TAG: version})


@wrap
def stock_debian_ami(ctx: AwsContext) -> str:
    """The region's current Debian 12 AMI, as AWS publishes it (SSM public parameter)."""
    try:
        value = ctx.client("ssm").get_parameter(Name=DEBIAN_12_PARAMETER)["Parameter"]["Value"]
    except ClientError as exc:
        if code_of(exc) != "ParameterNotFound":
            raise
        raise AwsError(f"No Debian 12 AMI is published in {ctx.region} (SSM parameter "
                       f"{DEBIAN_12_PARAMETER} not found); build the image in another region."
                       ) from None
    return value


@wrap
def launch_builder(ctx: AwsContext, *, image_id: str, subnet_id: str,
                   instance_profile: str | None, user_data: str, tags: dict[str, str],
                   client_token: str, instance_type: str = BUILDER_TYPE,
                   role: str = BUILDER_ROLE) -> InstanceInfo:
    """Launch the builder (or find the one launched with this token)."""
    ec2 = ctx.client("ec2")
    existing = _describe(ec2, T.filters({LAUNCH_TOKEN: client_token}))
    if existing:
        return existing[0]
    all_tags = {**tags, T.ROLE: role, LAUNCH_TOKEN: client_token}
    kwargs: dict[str, Any] = {
        "ImageId": image_id, "InstanceType": instance_type, "MinCount": 1, "MaxCount": 1,
        "SubnetId": subnet_id, "UserData": user_data, "ClientToken": client_token,
        "TagSpecifications": [{"ResourceType": "instance", "Tags": T.as_aws(all_tags)},
                              {"ResourceType": "volume", "Tags": T.as_aws(all_tags)}],
        # The builder must survive as a stopped or running instance until CreateImage.
        "InstanceInitiatedShutdownBehavior": "stop",
    }
    if instance_profile:
        kwargs["IamInstanceProfile"] = {"Name": instance_profile}
    return _info(ec2.run_instances(**kwargs)["Instances"][0])


@wrap
def find_builder(ctx: AwsContext, client_token: str) -> InstanceInfo | None:
    """The builder launched with `client_token`, if any (terminated ones included)."""
    found = _describe(ctx.client("ec2"), T.filters({LAUNCH_TOKEN: client_token}))
    return found[0] if found else None


@wrap
def describe_instance(ctx: AwsContext, instance_id: str) -> InstanceInfo | None:
    try:
        found = _describe(ctx.client("ec2"), [{"Name": "instance-id", "Values": [instance_id]}])
    except ClientError as exc:
        if code_of(exc) == "InvalidInstanceID.NotFound":
            return None
        raise
    return found[0] if found else None


@wrap
def console_output(ctx: AwsContext, instance_id: str, lines: int = 30) -> str:
    """The last `lines` lines the instance printed on its console ("" when there is none)."""
    try:
        out = ctx.client("ec2").get_console_output(InstanceId=instance_id, Latest=True)
    except ClientError as exc:
        if code_of(exc) in ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"):
            return ""
        raise
    text = out.get("Output") or ""
    with contextlib.suppress(ValueError):  # EC2 returns it base64-encoded; boto3 keeps it so
        text = base64.b64decode(text, validate=True).decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


@wrap
def create_image(ctx: AwsContext, instance_id: str, name: str, tags: dict[str, str]) -> str:
    """CreateImage of the builder, named `name`; the image of that name if it exists."""
    ec2 = ctx.client("ec2")
    found = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])
    if found["Images"]:
        return found["Images"][0]["ImageId"]
    return ec2.create_image(
        InstanceId=instance_id, Name=name,
        Description=f"overcast VM image ({tags.get(VERSION_TAG, '')})",
        # Not the snapshots: moto cannot tag them here, and tagging them after would need
        # ec2:CreateTags outside a create action. They are found through their image.
        TagSpecifications=[{"ResourceType": "image", "Tags": T.as_aws(tags)}],
    )["ImageId"]


def _image_info(image: dict[str, Any]) -> ImageInfo:
    tags = T.from_aws(image.get("Tags"))
    snaps = [m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings", [])
             if m.get("Ebs", {}).get("SnapshotId")]
    return ImageInfo(image_id=image["ImageId"], name=image.get("Name", ""),
                     state=image.get("State", "pending"), created=image.get("CreationDate", ""),
                     version=tags.get(VERSION_TAG), snapshots=snaps,
                     reason=(image.get("StateReason") or {}).get("Message"))


@wrap
def describe_image(ctx: AwsContext, image_id: str) -> ImageInfo | None:
    try:
        images = ctx.client("ec2").describe_images(ImageIds=[image_id])["Images"]
    except ClientError as exc:
        if code_of(exc) in ("InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"):
            return None
        raise
    return _image_info(images[0]) if images else None


@wrap
def list_images(ctx: AwsContext, account: str) -> list[ImageInfo]:
    """overcast's images of `account` here (ours by tags and owner), newest first."""
    images = ctx.client("ec2").describe_images(
        Owners=["self"], Filters=T.filters(T.resource_tags(account)))["Images"]
    infos = [_image_info(i) for i in images if i.get("Name", "").startswith(IMAGE_PREFIX)]
    return sorted(infos, key=lambda i: (i.created, i.name), reverse=True)


def _deregister(ec2: Any, info: ImageInfo) -> None:
    """Deregister the image, then delete its snapshots (gone already: fine)."""
    try:
        ec2.deregister_image(ImageId=info.image_id)
    except ClientError as exc:
        if code_of(exc) not in ("InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"):
            raise
    for snap in info.snapshots:
        try:
            ec2.delete_snapshot(SnapshotId=snap)
        except ClientError as exc:
            if code_of(exc) != "InvalidSnapshot.NotFound":
                raise


@wrap
def prune_images(ctx: AwsContext, account: str, keep: int = KEEP,
                 protect: str | None = None) -> list[str]:
    """Deregister all but the newest `keep` available images (and delete their snapshots);
    `protect` is never removed. Returns the image ids removed."""
    ec2 = ctx.client("ec2")
    available = [i for i in list_images(ctx, account) if i.state == "available"]
    removed: list[str] = []
    for info in available[keep:]:
        if info.image_id == protect:
            continue
        _deregister(ec2, info)
        removed.append(info.image_id)
    return removed


@wrap
def delete_images(ctx: AwsContext, account: str, report: Report = noop) -> list[str]:
    """Teardown: deregister every overcast image of `account` made by this control plane (our
    managed and deployment tags, our own AMIs), in any state, and delete their snapshots.
    Returns the image ids removed."""
    ec2 = ctx.client("ec2")
    removed: list[str] = []
    for info in list_images(ctx, account):
        _deregister(ec2, info)
        report(Resource("image", info.image_id, None, "deleted"))
        for snap in info.snapshots:
            report(Resource("snapshot", snap, None, "deleted"))
        removed.append(info.image_id)
    return removed
