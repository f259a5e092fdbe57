"""The overcast Python client: `Cluster` and helper functions; settings from dask config."""

from overcast.client.config import register_defaults

register_defaults()

from overcast.client.cluster import Cluster
from overcast.client.errors import (
    ApiError,
    ClusterStartError,
    NotConfigured,
    NotFound,
    OvercastError,
    ServerUnreachable,
)
from overcast.client.functions import (
    delete_cluster,
    get_logs,
    get_notifications,
    list_clusters,
)

__all__ = [
    "ApiError",
    "Cluster",
    "ClusterStartError",
    "NotConfigured",
    "NotFound",
    "OvercastError",
    "ServerUnreachable",
    "delete_cluster",
    "get_logs",
    "get_notifications",
    "list_clusters",
]
