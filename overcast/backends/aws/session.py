"""Who we are on AWS: a boto3 Session bound to one region, and the clients made from it.

Endpoints are never passed here: boto3 reads `AWS_ENDPOINT_URL` itself, which is how the same
code reaches the local cloud (moto) or real AWS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.credentials import RefreshableCredentials

from .errors import aws_errors, note_call

# Standard retry mode backs off on throttling and transient 5xx for us.
_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, user_agent_extra="overcast")
# For calls whose errors the caller handles itself: a RunInstances capacity error (HTTP 500)
# should fail over to another zone at once, not be retried in the same zone for ~20 s.
_NO_RETRY = _CONFIG.merge(Config(retries={"mode": "standard", "max_attempts": 1}))
ROLE_SESSION_NAME = "overcast"
# One botocore data loader for every session: each service's model (EC2's is megabytes of
# JSON, ~0.3 s of CPU holding the GIL) is parsed once per process, not once per account's
# context, and not in the middle of a request burst (preload).
_LOADER = botocore.loaders.create_loader()
SERVICES = ("ec2", "ecr", "iam", "logs", "s3", "ssm", "sts")


def _core_session() -> botocore.session.Session:
    core = botocore.session.get_session()
    core.register_component("data_loader", _LOADER)
    return core


def preload(region: str = "us-east-1") -> None:
    """Parse the models and endpoint data of the services overcast calls (no request is sent:
    a client is made and dropped)."""
    core = _core_session()
    for service in SERVICES:
        core.create_client(service, region_name=region, aws_access_key_id="preload",
                           aws_secret_access_key="preload")


@dataclass
class AwsContext:
    session: boto3.Session
    region: str
    _clients: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def client(self, service: str, retry: bool = True) -> Any:
        """A cached client for `service` in this context's region (`retry=False`: one
        attempt per call, no botocore retries)."""
        key = service if retry else f"{service}:no-retry"
        if key not in self._clients:
            client = self.session.client(service, region_name=self.region,
                                         config=_CONFIG if retry else _NO_RETRY)
            # before-parameter-build fires even when a before-call hook short-circuits the call.
            client.meta.events.register("before-parameter-build", _remember_call)
            self._clients[key] = client
        return self._clients[key]

    def account_id(self) -> str:
        """The AWS account these credentials act in (sts:GetCallerIdentity needs no policy)."""
        with aws_errors("sts:GetCallerIdentity"):
            return self.client("sts").get_caller_identity()["Account"]


def _action_name(model: Any) -> str:
    # IAM action prefixes are the signing names (ecr, logs, ec2...), not the service ids.
    service = model.service_model.signing_name or model.service_model.endpoint_prefix
    return f"{service}:{model.name}"


def _remember_call(model: Any, **_: Any) -> None:
    note_call(_action_name(model))


def context(
    region: str,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    role_arn: str | None = None,
    external_id: str | None = None,
) -> AwsContext:
    """An AwsContext for the given credentials.

    No keys: boto3's default chain (the operator's own credentials). Keys: a customer's
    long-lived IAM user. role_arn: assume that role (with ExternalId) using the keys or the
    default chain; the temporary credentials refresh themselves before they expire.
    """
    if (access_key_id is None) != (secret_access_key is None):
        raise ValueError("give both access_key_id and secret_access_key, or neither")
    base = boto3.Session(
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        region_name=region,
        botocore_session=_core_session(),
    )
    if role_arn is None:
        return AwsContext(base, region)
    return AwsContext(_assumed_session(base, region, role_arn, external_id), region)


def _assumed_session(
    base: boto3.Session, region: str, role_arn: str, external_id: str | None
) -> boto3.Session:
    sts = base.client("sts", region_name=region, config=_CONFIG)

    def fetch() -> dict[str, str]:
        kwargs: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": ROLE_SESSION_NAME}
        if external_id:
            kwargs["ExternalId"] = external_id
        with aws_errors("sts:AssumeRole"):
            creds = sts.assume_role(**kwargs)["Credentials"]
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": creds["Expiration"].isoformat(),
        }

    # RefreshableCredentials calls fetch() again ~15 minutes before expiry.
    credentials = RefreshableCredentials.create_from_metadata(
        metadata=fetch(), refresh_using=fetch, method="sts-assume-role"
    )
    core = _core_session()
    core._credentials = credentials  # the documented way boto3 users attach refreshable creds
    core.set_config_variable("region", region)
    return boto3.Session(botocore_session=core, region_name=region)


def record_actions(
    target: boto3.Session | AwsContext, sink: Callable[[str], None] | None = None
) -> list[str]:
    """Record every "service:Operation" called through `target` into the returned list
    (or, given `sink`, pass each one to it instead, e.g. to append it to a file).

    Register before making calls: clients copy their session's hooks when created, so for an
    AwsContext the already-cached clients are hooked as well.
    """
    calls: list[str] = []
    put = sink or calls.append

    def hook(model: Any, **_: Any) -> None:
        put(_action_name(model))

    if isinstance(target, AwsContext):
        target.session.events.register("before-call", hook)
        for client in target._clients.values():
            client.meta.events.register("before-call", hook)
    else:
        target.events.register("before-call", hook)
    return calls
