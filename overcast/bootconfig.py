"""The document a VM boots with (EC2 user data): what its agent needs to join its cluster."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

FORMAT_VERSION = 1


@dataclass
class BootConfig:
    control_plane: str
    cluster_id: int
    cluster_token: str
    role: str  # "scheduler" or "worker"
    log_group: str
    region: str
    scheduler_port: int = 8786
    dashboard_port: int = 8787
    worker_resources: dict[str, float] = field(default_factory=dict)
    nthreads: int | None = None
    heartbeat_interval: float = 2.0

    def to_user_data(self) -> str:
        return json.dumps({"overcast": FORMAT_VERSION, **asdict(self)})

    @classmethod
    def from_user_data(cls, text: str) -> BootConfig:
        data = json.loads(text)
        if data.pop("overcast", None) != FORMAT_VERSION:
            raise ValueError("user data is not an overcast boot document (version 1)")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})
