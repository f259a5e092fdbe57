"""AWS failures turned into errors a person can act on.

Every public function of this package raises `AwsError` (or a subclass) instead of botocore's
exceptions. Messages fit on one screen, say what to do next and never contain credentials:
we build them from the error code, the action and AWS's own message, never from request params.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
)

from ..base import (
    CapacityError,
    CredentialsInvalid,
    PermissionMissing,
    ProviderError,
    QuotaExceeded,
    ServerError,
    Throttled,
)

P = ParamSpec("P")
R = TypeVar("R")

# The last "service:Operation" each thread called (set by AwsContext's before-call hook), so an
# error from real EC2 whose message names no action can still say which permission is missing.
_last_call = threading.local()

_ACTION_RE = re.compile(r"not authorized to perform:? ([a-z0-9-]+:[A-Za-z0-9*]+)")
_XML_CODE_RE = re.compile(r"<Code>([^<]+)</Code>")
_XML_MESSAGE_RE = re.compile(r"<Message>([^<]*)</Message>", re.DOTALL)
_ZONE_RE = re.compile(r"\b([a-z]{2}(?:-gov)?-[a-z]+-\d[a-z])\b")
_ENCODED_RE = re.compile(r"\s*Encoded authorization failure message:.*", re.DOTALL)

DENIED = {"UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "UnauthorizedAccess"}
CAPACITY = {
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity",
    "InsufficientFreeAddressesInSubnet",
    "Unsupported",
    "SpotMaxPriceTooLow",
}
THROTTLED = {
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "SlowDown",
}
# AWS failed on its side: retried with backoff (EC2's documented server error codes).
SERVER = {
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "InternalServiceException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "Unavailable",
    "ServiceFailure",
}
STANDARD = "Standard (A, C, D, H, I, M, R, T, Z)"
# Account/region limits -> the Service Quotas name to raise. MaxSpotInstanceCountExceeded is
# region-wide (every zone has the same limit), so it is a quota, not a zone's capacity.
QUOTAS = {
    "VcpuLimitExceeded": f"Running On-Demand {STANDARD} instances",
    "InstanceLimitExceeded": f"Running On-Demand {STANDARD} instances",
    "MaxSpotInstanceCountExceeded": f"All {STANDARD} Spot Instance Requests",
    "AddressLimitExceeded": "EC2-VPC Elastic IPs",
    "VpcLimitExceeded": "VPCs per Region",
    "SecurityGroupLimitExceeded": "VPC security groups per Region",
    "RulesPerSecurityGroupLimitExceeded": "Inbound or outbound rules per security group",
    "NatGatewayLimitExceeded": "NAT gateways per Availability Zone",
    "InternetGatewayLimitExceeded": "Internet gateways per Region",
    "SubnetLimitExceeded": "Subnets per VPC",
    "RouteTableLimitExceeded": "Route tables per VPC",
    "LimitExceededException": "the service's limit named in the message",
}
# vCPU quotas are per instance family: the first letter of the type picks the bucket.
# Longest prefixes first ("dl" before nothing, "inf" before "i"-less checks).
_FAMILY_QUOTAS = {"inf": "Inf", "trn": "Trn", "hpc": "HPC", "dl": "DL", "vt": "G and VT",
                  "g": "G and VT", "p": "P", "f": "F", "x": "X"}
BAD_CREDENTIALS = {
    "AuthFailure",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "UnrecognizedClientException",
    "InvalidAccessKeyId",
}


# The cloud-neutral classes are the AWS ones: `AwsError` is `ProviderError` under its old name.
AwsError = ProviderError

def permission_message(actions: list[str], what: str | None = None) -> str:
    listed = ", ".join(actions) if actions else "an unnamed action"
    head = f"{what}: " if what else ""
    return (
        f"{head}the AWS credentials are not allowed to call {listed}. Attach overcast's "
        "policies (setup and ongoing) to the IAM user or role, or add the missing action, "
        "then try again."
    )


def _error_fields(exc: ClientError) -> tuple[str, str]:
    err = exc.response.get("Error", {}) or {}
    code = str(err.get("Code", "") or "")
    message = str(err.get("Message", "") or "")
    # Logs and ECR (JSON APIs) deny with an XML body: botocore shows Code='403' and the XML.
    if message.lstrip().startswith("<"):
        inner_code = _XML_CODE_RE.search(message)
        inner_msg = _XML_MESSAGE_RE.search(message)
        code = inner_code.group(1) if inner_code else code
        message = inner_msg.group(1) if inner_msg else ""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == "403" or (not code and status == 403):
        code = "AccessDenied"
    return code, _ENCODED_RE.sub("", message).strip()


def _guess_action(exc: ClientError) -> str | None:
    last = getattr(_last_call, "action", None)
    if last and last.endswith(":" + exc.operation_name):
        return last
    return None


def translate(exc: ClientError, action_hint: str | None = None) -> AwsError:
    """Turn a botocore ClientError into the matching AwsError subclass."""
    code, message = _error_fields(exc)
    op = exc.operation_name
    if code in DENIED or code.endswith("AccessDenied"):
        found = _ACTION_RE.findall(message)
        actions = found or [a for a in [action_hint or _guess_action(exc)] if a] or [op]
        actions = list(dict.fromkeys(actions))
        return PermissionMissing(permission_message(actions), actions, code=code)
    if code in CAPACITY:
        zone_match = _ZONE_RE.search(message)
        zone = zone_match.group(1) if zone_match else None
        where = f"in {zone}" if zone else "in this zone"
        return CapacityError(
            f"AWS cannot provide this instance {where} right now ({code}: {message}). "
            "Try another zone or instance type, or try again later.",
            zone,
            code=code,
        )
    if code in QUOTAS:
        quota = QUOTAS[code]
        return QuotaExceeded(
            f"An AWS quota is reached ({code} on {op}: {message or 'no message'}). Ask AWS to "
            f"raise the quota \"{quota}\" (Service Quotas console, region's EC2/VPC); "
            "overcast keeps what runs and adds more once it is raised.",
            quota, code=code)
    if code in THROTTLED:
        return Throttled(
            f"AWS is throttling requests ({code} on {op}). Overcast will retry shortly; "
            "if this persists, ask AWS for higher API limits.",
            code=code,
            action=action_hint,
        )
    if code in SERVER or _status(exc) >= 500:
        return ServerError(
            f"AWS had an internal error ({code or 'HTTP 5xx'} on {op}); overcast retries with "
            "backoff.", code=code, action=action_hint)
    if code in BAD_CREDENTIALS:
        return CredentialsInvalid(
            f"AWS rejected the credentials ({code}). Check the access key ID and secret, that "
            "the key is active, and that it is a long-lived key, then save them again.",
            code=code,
        )
    if code == "InvalidParameterValue" and "instance profile" in message.lower():
        # A new instance profile takes a few seconds to be usable by EC2 (IAM is eventually
        # consistent); the next pass succeeds.
        err = AwsError(
            f"The instance profile is not usable by EC2 yet ({message}); retrying shortly.",
            code=code,
        )
        err.retryable = True
        return err
    return AwsError(
        f"AWS {op} failed: {code}: {message or 'no message'}",
        code=code,
        action=action_hint,
    )


def _status(exc: ClientError) -> int:
    try:
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    except (TypeError, ValueError):
        return 0


def quota_for_type(quota: str, instance_type: str, spot: bool) -> str:
    """The vCPU quota of `instance_type`'s family (quotas are per family bucket)."""
    if not quota.startswith(("Running On-Demand", "All ")):
        return quota
    prefix = instance_type.split(".")[0].lower()
    family = next((name for key, name in _FAMILY_QUOTAS.items() if prefix.startswith(key)),
                  STANDARD)
    return f"All {family} Spot Instance Requests" if spot else \
        f"Running On-Demand {family} instances"


def translate_any(exc: BaseException, action_hint: str | None = None) -> AwsError:
    if isinstance(exc, AwsError):
        return exc
    if isinstance(exc, ClientError):
        return translate(exc, action_hint)
    if isinstance(exc, NoCredentialsError):
        return CredentialsInvalid(
            "No AWS credentials were found. Configure an access key for this backend "
            "(or the operator's default credentials) and try again."
        )
    if isinstance(exc, NoRegionError):
        return AwsError("No AWS region was given. Choose a region for this backend.")
    if isinstance(exc, EndpointConnectionError):
        return ServerError(
            f"Cannot reach the AWS endpoint ({exc.kwargs.get('endpoint_url', '?')}). "
            "Check the network (or that the local cloud is running); overcast retries."
        )
    if isinstance(exc, BotoCoreError):
        return AwsError(f"AWS request failed: {type(exc).__name__}: {exc}")
    raise TypeError(f"not an AWS error: {exc!r}")


@contextmanager
def aws_errors(action_hint: str | None = None) -> Iterator[None]:
    """`with aws_errors("ec2:CreateSubnet"): ...` re-raises botocore errors as AwsError."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise translate_any(exc, action_hint) from exc


def wrap(func: Callable[P, R]) -> Callable[P, R]:
    """Decorator form of `aws_errors` for the package's public functions."""

    @functools.wraps(func)
    def inner(*args: P.args, **kwargs: P.kwargs) -> R:
        with aws_errors():
            return func(*args, **kwargs)

    return inner


def code_of(exc: ClientError) -> str:
    """The error code, looking inside the XML body of Logs/ECR denials."""
    return _error_fields(exc)[0]


def note_call(action: str) -> None:
    _last_call.action = action
