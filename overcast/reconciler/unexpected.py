"""What an unexpected exception in a cluster's step does: one notification row (counted, not
repeated), and after a few in a row a clear end instead of a cluster stuck forever.

- pending/starting: after `START_LIMIT` failures in a row the cluster fails (it goes through
  stopping, which terminates what was launched).
- stopping: after `STOP_LIMIT` failures in a row it is marked finished (its `final_state`,
  normally error) with the reason; the sweeper terminates anything of it still in the cloud,
  on its own code path.
- running: kept running (its VMs work); retried with backoff.

The notification names the exception's type only: its text could carry anything.
"""

from __future__ import annotations

import logging

from overcast.store.db import Database
from overcast.store.models import Cluster, utcnow
from overcast.store.notify import notify

log = logging.getLogger("overcast.reconciler")
START_LIMIT = 5
STOP_LIMIT = 8


class Unexpected:
    def __init__(self, db: Database, machine) -> None:
        self.db, self.machine = db, machine

    def record(self, cluster_id: int, exc: BaseException, failures: int) -> None:
        try:
            with self.db.session() as session:
                cluster = session.get(Cluster, cluster_id)
                if cluster is None:
                    return
                self._record(session, cluster, type(exc).__name__, failures)
                session.commit()
        except Exception:  # the database itself may be what fails: the log has it
            log.exception("cluster %s: could not record the failure", cluster_id)

    def _record(self, session, cluster: Cluster, kind: str, failures: int) -> None:
        notify(session, cluster.account_id, "reconciler-error",
               f"An internal error ({kind}) interrupted this cluster's step; overcast retries "
               "with backoff.", level="error", cluster=cluster)
        if cluster.state in ("pending", "starting") and failures >= START_LIMIT:
            self.machine.fail(session, cluster, f"overcast hit an internal error ({kind}) "
                              f"{failures} times in a row while starting this cluster; it is "
                              "being stopped so nothing is left half-made.")
        elif cluster.state == "stopping" and failures >= STOP_LIMIT:
            cluster.reason = cluster.reason or (
                f"Stopping hit an internal error ({kind}) {failures} times in a row; anything "
                "left in the cloud is removed by the sweeper.")
            cluster.state, cluster.stopped_at = cluster.final_state, utcnow()
            notify(session, cluster.account_id, f"cluster-{cluster.state}",
                   f"Cluster {cluster.state}: {cluster.reason}",
                   level="error" if cluster.state == "error" else "warning", cluster=cluster)
