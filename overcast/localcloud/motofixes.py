"""Where moto differs from AWS in ways that matter to overcast's IAM checks, made like AWS.

- CloudWatch Logs: moto checks every logs action against the resource "*", so a policy scoped
  to a log group (the instance role's) denies everything. AWS checks the group / stream ARN
  (and `log-group:*` for DescribeLogGroups, the given ARN for the tagging calls).
- Where moto knows no resource at all (EC2, ECR: it checks against "*"), a statement scoped by
  ARN never matched, so scoped policies denied everything. Such a request now matches a
  statement whose Resource names that service's ARNs: the action is still checked exactly, the
  ARN cannot be (policies/README.md lists this as unchecked here). S3, IAM roles and Logs keep
  their real ARN checks.
- CloudWatch Logs: deleting a log group left its tags behind in moto, so a new group of the
  same name inherited them (and looked like overcast's). AWS deletes a group's tags with it.
- S3: HEAD of a bucket is authorised as s3:ListBucket, as on AWS (moto: "s3:HeadBucket", an
  action that does not exist, so a role allowed to list a bucket could not HEAD it).
- DeleteNatGateway of an id that does not exist crashes moto (HTTP 500); AWS says
  NatGatewayNotFound.
- CreateInstanceProfile accepts any Path; AWS requires one that starts and ends with "/".

`apply()` is idempotent and also used by unit tests that run moto in-process.
"""

from __future__ import annotations

import re
from typing import Any

from overcast.localcloud.motopatch import wrap_once

_PATH = re.compile(r"^(/|/[\x21-\x7e]+/)$")


def apply() -> None:
    _logs_resources()
    _unknown_resources()
    _s3_head_bucket()
    _logs_tags_die_with_group()
    _nat_gateway_not_found()
    _instance_profile_path()


def _logs_resources() -> None:
    from moto.logs.responses import LogsResponse

    if getattr(LogsResponse, "_overcast_resources", False):
        return

    def _determine_resource(self: Any) -> str:
        group = self._get_param("logGroupName")
        base = f"arn:aws:logs:{self.region}:{self.current_account}:log-group:"
        if not group:
            return self._get_param("resourceArn") or f"{base}*"
        arn = f"{base}{group}"
        stream = self._get_param("logStreamName")
        return f"{arn}:log-stream:{stream}" if stream else f"{arn}:*"

    LogsResponse._determine_resource = _determine_resource  # type: ignore[attr-defined]
    LogsResponse._overcast_resources = True  # type: ignore[attr-defined]


def _nat_gateway_not_found() -> None:
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.nat_gateways import NatGatewayBackend

    def build(original: Any) -> Any:
        def delete_nat_gateway(self: Any, nat_gateway_id: str) -> Any:
            if nat_gateway_id not in self.nat_gateways:
                raise EC2ClientError("NatGatewayNotFound",
                                     f"The Nat Gateway {nat_gateway_id} was not found")
            return original(self, nat_gateway_id)
        return delete_nat_gateway

    wrap_once(NatGatewayBackend, "delete_nat_gateway", build)


def _instance_profile_path() -> None:
    from moto.iam.exceptions import ValidationError
    from moto.iam.models import IAMBackend

    def build(original: Any) -> Any:
        def create_instance_profile(self: Any, name: str, path: str, *args: Any,
                                    **kwargs: Any) -> Any:
            if path and not _PATH.match(path):
                raise ValidationError(f"The specified value for path is invalid: {path}")
            return original(self, name, path, *args, **kwargs)
        return create_instance_profile

    wrap_once(IAMBackend, "create_instance_profile", build)


def _unknown_resources() -> None:
    from moto.iam.access_control import IAMPolicyStatement

    def build(original: Any) -> Any:
        def is_action_permitted(self: Any, action: str, resource: str = "*", *args: Any,
                                **kwargs: Any) -> Any:
            if resource == "*" and self._statement.get("Resource"):
                # moto does not know which resource this request touches: let a statement that
                # names ARNs of the action's service cover it (conditions are ignored either way).
                prefix = f"arn:aws:{action.split(':', 1)[0]}:"
                names = self._statement["Resource"]
                names = [names] if isinstance(names, str) else names
                if any(n == "*" or n.startswith(prefix) for n in names):
                    statement = IAMPolicyStatement({**self._statement, "Resource": "*"})
                    return original(statement, action, resource, *args, **kwargs)
            return original(self, action, resource, *args, **kwargs)
        return is_action_permitted

    wrap_once(IAMPolicyStatement, "is_action_permitted", build)


def _s3_head_bucket() -> None:
    from moto.s3 import responses

    responses.ACTION_MAP["BUCKET"]["HEAD"]["DEFAULT"] = "ListBucket"


def _logs_tags_die_with_group() -> None:
    from moto.logs.models import LogsBackend

    def build(original: Any) -> Any:
        def delete_log_group(self: Any, log_group_name: str) -> None:
            group = self.groups.get(log_group_name)
            original(self, log_group_name)
            if group is not None:
                self.tagger.delete_all_tags_for_resource(group.arn)
        return delete_log_group

    wrap_once(LogsBackend, "delete_log_group", build)
