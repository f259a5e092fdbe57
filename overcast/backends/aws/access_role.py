"""The cross-account role a customer gives overcast (role mode), made from their own profile.

The role trusts only the operator's AWS account, and only with the external id overcast
generated for that overcast account (the confused-deputy guard AWS recommends). The setup and
ongoing policies are attached as two managed policies, so the customer can detach setup later.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from ... import tags as T
from .errors import code_of, wrap
from .network import Report, Resource, noop
from .session import AwsContext


def role_name(slug: str) -> str:
    return f"overcast-access-{slug}"[:64]


def trust_policy(trusted_account: str, external_id: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{trusted_account}:root"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
        }],
    }


def _policy_arn(iam: Any, account: str, name: str, document: dict, slug: str) -> str:
    arn = f"arn:aws:iam::{account}:policy/{name}"
    try:
        iam.get_policy(PolicyArn=arn)
        # A new default version keeps the policy equal to what this overcast needs; AWS keeps
        # at most 5 versions, so the oldest non-default one goes first.
        versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
        old = sorted((v for v in versions if not v["IsDefaultVersion"]),
                     key=lambda v: v["CreateDate"])
        if len(versions) >= 5 and old:
            iam.delete_policy_version(PolicyArn=arn, VersionId=old[0]["VersionId"])
        iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(document),
                                  SetAsDefault=True)
    except ClientError as exc:
        if code_of(exc) != "NoSuchEntity":
            raise
        arn = iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(document),
                                Description=f"overcast {name}",
                                Tags=T.as_aws(T.resource_tags(slug)))["Policy"]["Arn"]
    return arn


@wrap
def ensure_access_role(ctx: AwsContext, slug: str, trusted_account: str, external_id: str,
                       policies: dict[str, dict], report: Report = noop) -> str:
    """Create (or update) the role and attach `policies` ({name: document}); returns its ARN."""
    iam = ctx.client("iam")
    name = role_name(slug)
    account = ctx.account_id()
    trust = json.dumps(trust_policy(trusted_account, external_id))
    try:
        role = iam.get_role(RoleName=name)["Role"]
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=trust)
        state = "found"
    except ClientError as exc:
        if code_of(exc) != "NoSuchEntity":
            raise
        role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust,
                               Description=f"overcast control plane access for {slug}",
                               Tags=T.as_aws(T.resource_tags(slug)))["Role"]
        state = "created"
    report(Resource("access-role", role["Arn"], None, state))
    for policy, document in policies.items():
        arn = _policy_arn(iam, account, f"overcast-{slug}-{policy}", document, slug)
        iam.attach_role_policy(RoleName=name, PolicyArn=arn)
        report(Resource("access-policy", arn, None, "attached"))
    return role["Arn"]
