"""Deleting the cluster an `overcast.Cluster` made: on close (waiting until it is stopped)
and when its start fails (not waiting), including a create that got no answer."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from overcast.client import config
from overcast.client.api import Api
from overcast.client.errors import NotFound

logger = logging.getLogger("overcast.client")


class Teardown:
    """Mixed into `overcast.Cluster`, whose constructor sets these attributes."""

    name: str
    shutdown_on_close: bool
    _api: Api
    _account: str | None
    _idempotency_key: str
    _create_sent: bool
    _created: bool
    _info: dict[str, Any]
    _abandon_task: asyncio.Future | None

    async def _abandon(self) -> None:
        """Delete the cluster if this object created it (once, even if called twice)."""
        if not self._created and self._create_sent and self.shutdown_on_close:
            await self._abandon_unanswered()
        if not (self._created and self.shutdown_on_close and self._info.get("name")):
            return
        if self._abandon_task is None:
            self._abandon_task = asyncio.ensure_future(self._delete(wait=False))
        await asyncio.shield(self._abandon_task)

    async def _abandon_unanswered(self) -> None:
        """The create got no answer (every retry failed), yet it may have made a cluster:
        look it up by this object's key and delete it, so none is left that the user never
        heard of."""
        try:
            found = await self._api.arequest(
                "GET", Api.clusters_path(self._account),
                params={"idempotency_key": self._idempotency_key}, retries=2)
        except Exception as exc:  # noqa: BLE001 - best effort; the start error matters more
            logger.warning("could not check whether the failed create made a cluster: %s", exc)
            return
        for info in found or []:
            self._info, self.name, self._created = info, info["name"], True

    async def _delete(self, wait: bool) -> None:
        path = Api.clusters_path(self._account, self.name)
        try:
            self._info = await self._api.arequest("DELETE", path) or self._info
        except NotFound:
            return
        if not wait:
            return
        timeout = config.seconds("close-timeout")
        deadline = time.monotonic() + timeout
        poll = config.seconds("poll-interval")
        while self._info.get("state") not in ("stopped", "error"):
            if time.monotonic() > deadline:
                logger.warning("Cluster %s is still %s after %.0f s; the control plane keeps "
                               "stopping it.", self.name, self._info.get("state"), timeout)
                return
            await asyncio.sleep(poll)
            try:
                self._info = await self._api.arequest("GET", path)
            except NotFound:
                return
