"""Client settings from dask config, namespace `overcast` (defaults in overcast/overcast.yaml)."""

from __future__ import annotations

import os
from typing import Any

import dask.config
import yaml
from dask.utils import parse_timedelta

_DEFAULTS_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "overcast.yaml")


def register_defaults() -> None:
    """Register overcast's defaults with dask (idempotent; user config still wins)."""
    with open(_DEFAULTS_FILE) as f:
        defaults = yaml.safe_load(f)
    dask.config.update_defaults(defaults)


def get(key: str, value: Any = None) -> Any:
    """`value` if given, else `overcast.<key>` from dask config (explicit arguments win)."""
    if value is not None:
        return value
    return dask.config.get(f"overcast.{key}", default=None)


def seconds(key: str, value: Any = None) -> float:
    return float(parse_timedelta(get(key, value), default="seconds"))


def user_config_path() -> str:
    """The file `overcast up` writes: `$DASK_CONFIG/overcast.yaml` (dask's user config dir)."""
    return os.path.join(dask.config.PATH, "overcast.yaml")


def write_user_config(values: dict[str, Any]) -> str:
    """Merge `values` into the `overcast:` section of the user config file (mode 0600).

    Other keys in that file are kept; the token makes it a secret, hence the mode.
    """
    path = user_config_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data: dict[str, Any] = {}
    if os.path.exists(path):
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    section = data.setdefault("overcast", {}) or {}
    section.update(values)
    data["overcast"] = section
    # Create with 0600 from the start so the token is never world-readable, even briefly.
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(data, f, default_flow_style=False, sort_keys=False)
    os.chmod(path + ".tmp", 0o600)
    os.replace(path + ".tmp", path)
    # Apply to this process too. Not dask.config.refresh(): that would drop defaults registered
    # after dask's own where both name a key.
    dask.config.set({f"overcast.{key}": value for key, value in values.items()})
    return path
