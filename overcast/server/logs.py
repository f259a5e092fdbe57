"""Reading a cluster's logs back from its account's CloudWatch log group.

The one API read that goes to AWS: logs live there (30 days), not in our database.
"""

from __future__ import annotations

from fastapi import HTTPException
from sqlalchemy.orm import Session

from overcast.backends.base import ProviderError
from overcast.reconciler.contexts import ContextFactory
from overcast.store.models import Cluster


class LogReader:
    def __init__(self, contexts: ContextFactory) -> None:
        self.contexts = contexts

    def __call__(self, session: Session, cluster: Cluster) -> dict[str, list[dict]]:
        target = self.contexts.for_account(session, cluster.account, cluster.region)
        streams = [i.aws_id for i in cluster.instances if i.aws_id]
        try:
            return self.contexts.provider.read_logs(target.ctx, cluster.account.slug, streams)
        except ProviderError as exc:
            raise HTTPException(502, f"Could not read logs from CloudWatch: {exc}") from None
