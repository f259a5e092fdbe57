"""The overcast Python client: `Cluster` and helper functions; settings from dask config."""

from overcast.client import daskcompat
from overcast.client.config import register_defaults

register_defaults()
daskcompat.apply()  # the docs' example persists a read_parquet: dask/dask#12488

from overcast.client.backend import (  # noqa: E402
    get_backend_options,
    set_backend_options,
)
from overcast.client.cluster import Cluster  # noqa: E402
from overcast.client.envs import (  # noqa: E402
    create_software_environment,
    delete_software_environment,
    get_software_environment,
    list_software_environments,
)
from overcast.client.errors import (  # noqa: E402
    ApiError,
    ClusterStartError,
    NotConfigured,
    NotFound,
    OvercastError,
    ServerUnreachable,
)
from overcast.client.functions import (  # noqa: E402
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
    "create_software_environment",
    "delete_cluster",
    "delete_software_environment",
    "get_backend_options",
    "get_logs",
    "get_notifications",
    "get_software_environment",
    "list_clusters",
    "list_software_environments",
    "set_backend_options",
]
