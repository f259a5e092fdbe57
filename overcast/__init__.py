"""overcast: Dask clusters on AWS (or the local cloud) for people who do not want to run
infrastructure. Public client API; settings come from dask config, namespace `overcast`."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("overcast")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"


def __getattr__(name: str):
    # Lazy, so `overcast-agent`, the server and the CLI do not import distributed and
    # httpx unless they use the client (import of distributed costs ~0.4 s).
    import importlib

    client = importlib.import_module("overcast.client")
    if name in client.__all__:
        return getattr(client, name)
    raise AttributeError(f"module 'overcast' has no attribute {name!r}")


__all__ = [
    "Cluster",
    "ClusterStartError",
    "NotConfigured",
    "OvercastError",
    "__version__",
    "create_software_environment",
    "delete_cluster",
    "delete_software_environment",
    "get_backend_options",
    "get_software_environment",
    "list_software_environments",
    "get_logs",
    "get_notifications",
    "list_clusters",
    "set_backend_options",
]
