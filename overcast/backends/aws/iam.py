"""The instance role: what an overcast VM may do, named after the account.

It ships its own logs to the account's log group and reads exactly the S3 buckets the account
named (`backend_options={"s3_read": [...]}`): none by default, so a hosted tenant's VMs cannot
read the operator's buckets.

The role and its instance profile are both called exactly the account slug, as the product
docs promise ("the role name that overcast creates is the same as your account slug"), so users
can attach their own S3 policies to it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import ClientError

from ... import tags as T
from .errors import AwsError, code_of, wrap
from .network import Report, Resource, noop
from .session import AwsContext

INLINE_POLICY = "overcast-instance"

TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def instance_policy(slug: str, s3_read: Sequence[str] = ()) -> dict[str, Any]:
    """Agents write their own log stream in the slug's group, pull (and builders push) the
    slug's environment images; dask reads the granted buckets."""
    group = f"arn:aws:logs:*:*:log-group:{slug}"
    statements: list[dict[str, Any]] = [
        {
            "Sid": "ShipLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            "Resource": [group, f"{group}:*"],
        }
    ]
    # Software environments (docs/software-environments.md): builders push, VMs pull the
    # account's repository only; the login token itself cannot be scoped to a repository.
    statements += [
        {"Sid": "RegistryLogin", "Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"],
         "Resource": "*"},
        {"Sid": "EnvironmentImages", "Effect": "Allow",
         "Action": ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchGetImage", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
                    "ecr:CompleteLayerUpload", "ecr:PutImage"],
         "Resource": f"arn:aws:ecr:*:*:repository/{slug.lower()}"},
    ]
    buckets = sorted(set(s3_read))
    if buckets:
        statements += [
            {"Sid": "ListGrantedBuckets", "Effect": "Allow", "Action": "s3:ListBucket",
             "Resource": [f"arn:aws:s3:::{b}" for b in buckets]},
            {"Sid": "ReadGrantedBuckets", "Effect": "Allow", "Action": "s3:GetObject",
             "Resource": [f"arn:aws:s3:::{b}/*" for b in buckets]},
        ]
    return {"Version": "2012-10-17", "Statement": statements}


def _is(exc: ClientError, code: str) -> bool:
    return code_of(exc) == code


@wrap
def ensure_instance_role(ctx: AwsContext, slug: str, report: Report = noop,
                         s3_read: Sequence[str] = ()) -> str:
    """Create (or repair) role + inline policy + instance profile; returns the profile name.

    `s3_read`: the buckets the VMs may read (the policy is rewritten on every call, so a
    changed list takes effect on the next set-up pass)."""
    iam = ctx.client("iam")
    tags = T.as_aws(T.resource_tags(slug))
    try:
        role = iam.get_role(RoleName=slug)["Role"]
        state = "found"
        if not T.ours(role.get("Tags")):
            # Never rewrite the policy of a role someone else (or another control plane) made.
            raise AwsError(
                f"An IAM role named {slug!r} already exists and was not created by this "
                "overcast control plane. Rename or delete it, then set the backend up again."
            )
    except ClientError as exc:
        if not _is(exc, "NoSuchEntity"):
            raise
        role = iam.create_role(
            RoleName=slug,
            AssumeRolePolicyDocument=json.dumps(TRUST_POLICY),
            Description=f"overcast instances of account {slug}",
            Tags=tags,
        )["Role"]
        state = "created"
    # put_role_policy overwrites: this also repairs a policy someone edited.
    iam.put_role_policy(
        RoleName=slug, PolicyName=INLINE_POLICY,
        PolicyDocument=json.dumps(instance_policy(slug, s3_read)),
    )
    report(Resource("iam-role", role["Arn"], None, state))

    try:
        profile = iam.get_instance_profile(InstanceProfileName=slug)["InstanceProfile"]
        state = "found"
        if profile.get("Tags") and not T.ours(profile["Tags"]):
            raise AwsError(
                f"An instance profile named {slug!r} already exists and was not created by "
                "this overcast control plane. Delete it, then set the backend up again."
            )
    except ClientError as exc:
        if not _is(exc, "NoSuchEntity"):
            raise
        profile = iam.create_instance_profile(InstanceProfileName=slug, Tags=tags)[
            "InstanceProfile"
        ]
        state = "created"
    if slug not in {r["RoleName"] for r in profile.get("Roles", [])}:
        try:
            iam.add_role_to_instance_profile(InstanceProfileName=slug, RoleName=slug)
        except ClientError as exc:
            if not _is(exc, "LimitExceeded"):  # a profile holds one role: someone else's
                raise
            raise AwsError(
                f"The instance profile {slug!r} already holds another role. Remove that role "
                "from it, then set the backend up again."
            ) from exc
    report(Resource("instance-profile", profile["Arn"], None, state))
    return slug


@wrap
def delete_instance_role(ctx: AwsContext, slug: str, report: Report = noop) -> None:
    """Delete the profile and the role (detaching any policies users attached). Idempotent."""
    iam = ctx.client("iam")
    try:
        profile = iam.get_instance_profile(InstanceProfileName=slug)["InstanceProfile"]
    except ClientError as exc:
        if not _is(exc, "NoSuchEntity"):
            raise
        profile = None
    if profile is not None and profile.get("Tags") and not T.ours(profile["Tags"]):
        profile = None  # not ours: leave it alone
    if profile is not None:
        for role in profile.get("Roles", []):
            iam.remove_role_from_instance_profile(
                InstanceProfileName=slug, RoleName=role["RoleName"]
            )
        iam.delete_instance_profile(InstanceProfileName=slug)
        report(Resource("instance-profile", profile["Arn"], None, "deleted"))

    try:
        role = iam.get_role(RoleName=slug)["Role"]
    except ClientError as exc:
        if _is(exc, "NoSuchEntity"):
            return
        raise
    if not T.ours(role.get("Tags")):
        return  # not ours: leave it alone
    for name in iam.list_role_policies(RoleName=slug)["PolicyNames"]:
        iam.delete_role_policy(RoleName=slug, PolicyName=name)
    for attached in iam.list_attached_role_policies(RoleName=slug)["AttachedPolicies"]:
        iam.detach_role_policy(RoleName=slug, PolicyArn=attached["PolicyArn"])
    # The role may still sit in another profile (someone added it by hand).
    for other in iam.list_instance_profiles_for_role(RoleName=slug)["InstanceProfiles"]:
        iam.remove_role_from_instance_profile(
            InstanceProfileName=other["InstanceProfileName"], RoleName=slug
        )
    iam.delete_role(RoleName=slug)
    report(Resource("iam-role", role["Arn"], None, "deleted"))
