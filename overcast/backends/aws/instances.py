"""Instances: find the agent image, launch one VM per call, list, terminate, describe types."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from ... import tags as T
from ..base import InstanceInfo, LaunchSpec, TypeInfo
from .errors import AwsError, code_of, wrap
from .session import AwsContext

# The launch's ClientToken is also stored as a tag: moto ignores ClientToken and cannot filter
# on client-token, and a tag look-up works the same on AWS.
LAUNCH_TOKEN = "overcast:launch-token"
LIVE_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]
_NOT_FOUND_ID = re.compile(r"i-[0-9a-f]+")


def _info(inst: dict[str, Any]) -> InstanceInfo:
    tags = T.from_aws(inst.get("Tags"))
    return InstanceInfo(
        aws_id=inst["InstanceId"],
        state=inst["State"]["Name"],
        zone=inst.get("Placement", {}).get("AvailabilityZone", ""),
        subnet_id=inst.get("SubnetId"),
        role=tags.get(T.ROLE),
        spot=inst.get("InstanceLifecycle") == "spot",
        private_ip=inst.get("PrivateIpAddress"),
        public_ip=inst.get("PublicIpAddress"),
        tags=tags,
        launch_time=inst.get("LaunchTime"),
        state_reason=(inst.get("StateReason") or {}).get("Code"),
    )


def _describe(ec2: Any, filters: list[dict]) -> list[InstanceInfo]:
    pages = ec2.get_paginator("describe_instances").paginate(Filters=filters)
    found = [_info(i) for page in pages for r in page["Reservations"] for i in r["Instances"]]
    return sorted(found, key=lambda i: (i.launch_time or datetime.min, i.aws_id))


@wrap
def launch(ctx: AwsContext, spec: LaunchSpec) -> InstanceInfo:
    """Launch one instance; calling again with the same client_token returns the same one."""
    if not spec.client_token or len(spec.client_token) > 64:
        raise ValueError("client_token must be 1..64 characters")
    ec2 = ctx.client("ec2")
    existing = _describe(ec2, T.filters({LAUNCH_TOKEN: spec.client_token}))
    if existing:
        return existing[0]
    tags = {T.MANAGED: "true", T.DEPLOYMENT: T.deployment_id(), **spec.tags,
            T.ROLE: spec.role, LAUNCH_TOKEN: spec.client_token}
    kwargs: dict[str, Any] = {
        "ImageId": spec.image_id,
        "InstanceType": spec.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "SubnetId": spec.subnet_id,
        "SecurityGroupIds": [spec.security_group_id],
        "UserData": spec.user_data,  # boto3 base64-encodes it
        "ClientToken": spec.client_token,
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": T.as_aws(tags)},
            {"ResourceType": "volume", "Tags": T.as_aws(tags)},
            # Tagged too: the ongoing policy allows RunInstances to make only tagged
            # instances, volumes and interfaces (aws:RequestTag).
            {"ResourceType": "network-interface", "Tags": T.as_aws(tags)},
        ],
        # Stopping is never used; a VM that shuts itself down (idle timeout) goes away.
        "InstanceInitiatedShutdownBehavior": "terminate",
    }
    if spec.instance_profile:
        kwargs["IamInstanceProfile"] = {"Name": spec.instance_profile}
    if spec.spot:
        kwargs["InstanceMarketOptions"] = {
            "MarketType": "spot",
            "SpotOptions": {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
            },
        }
    # One attempt: a capacity error goes straight back to the reconciler, which moves to
    # another zone; anything transient is retried by its next pass (same ClientToken).
    inst = ctx.client("ec2", retry=False).run_instances(**kwargs)["Instances"][0]
    return _info(inst)


@wrap
def list_cluster_instances(
    ctx: AwsContext, cluster_id: int, include_terminated: bool = False
) -> list[InstanceInfo]:
    filters = T.filters(T.cluster_filter(cluster_id))
    if not include_terminated:
        filters.append({"Name": "instance-state-name", "Values": LIVE_STATES})
    return _describe(ctx.client("ec2"), filters)


@wrap
def list_account_instances(ctx: AwsContext, account: str) -> list[InstanceInfo]:
    """All live instances of an overcast account (in every cluster)."""
    filters = T.filters(T.resource_tags(account))
    filters.append({"Name": "instance-state-name", "Values": LIVE_STATES})
    # The tag filter is also checked here: the sweeper terminates what this returns.
    return [i for i in _describe(ctx.client("ec2"), filters) if T.ours(i.tags)]


@wrap
def terminate(ctx: AwsContext, ids: list[str]) -> list[str]:
    """Terminate the instances; ids that no longer exist are skipped. Returns those asked."""
    ec2 = ctx.client("ec2")
    todo = list(dict.fromkeys(ids))
    done: list[str] = []
    while todo:
        batch, todo = todo[:500], todo[500:]
        while batch:
            try:
                ec2.terminate_instances(InstanceIds=batch)
                done.extend(batch)
                break
            except ClientError as exc:
                if code_of(exc) != "InvalidInstanceID.NotFound":
                    raise
                # One unknown id fails the whole call on AWS: drop the ids it names, retry.
                missing = set(_NOT_FOUND_ID.findall(str(exc)))
                if not missing & set(batch):
                    raise
                batch = [i for i in batch if i not in missing]
    return done


@wrap
def instance_types(ctx: AwsContext, names: list[str]) -> dict[str, TypeInfo]:
    """vCPUs, memory and GPUs of each type; unknown names raise an AwsError naming them."""
    ec2 = ctx.client("ec2")
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return {}
    try:
        found = ec2.describe_instance_types(InstanceTypes=wanted)["InstanceTypes"]
    except ClientError as exc:
        if code_of(exc) != "InvalidInstanceType":
            raise
        found = []
        for name in wanted:  # find out which ones are unknown
            try:
                found += ec2.describe_instance_types(InstanceTypes=[name])["InstanceTypes"]
            except ClientError as inner:
                if code_of(inner) != "InvalidInstanceType":
                    raise
    out = {t["InstanceType"]: _type_info(t) for t in found}
    unknown = [n for n in wanted if n not in out]
    if unknown:
        raise AwsError(
            f"Unknown instance type(s) in {ctx.region}: {', '.join(unknown)}. "
            "Check the spelling, or pick types offered in this region."
        )
    return out


def _type_info(t: dict[str, Any]) -> TypeInfo:
    gpus = sum(g.get("Count", 0) for g in t.get("GpuInfo", {}).get("Gpus", []))
    return TypeInfo(
        name=t["InstanceType"],
        vcpus=t["VCpuInfo"]["DefaultVCpus"],
        memory_mib=t["MemoryInfo"]["SizeInMiB"],
        gpus=gpus,
    )
