"""The AWS backend: the only package that talks to AWS (or the local cloud) with boto3.

Small idempotent functions over an `AwsContext`; see README.md in this directory.
"""

from .errors import AwsError, CapacityError, CredentialsInvalid, PermissionMissing, Throttled
from .network import Network, Resource
from .session import AwsContext, context, record_actions

__all__ = [
    "AwsContext",
    "AwsError",
    "CapacityError",
    "CredentialsInvalid",
    "Network",
    "PermissionMissing",
    "Resource",
    "Throttled",
    "context",
    "record_actions",
]
