"""The backend state machine: setting up (or tearing down) a customer's AWS account.

pending > provisioning > ready | error, and deleting > (hosted) for `--teardown`. Each step is
idempotent (the backends package looks everything up before creating it), so a crash or a
retryable AWS error is repaired by the next pass; running setup again on an account that is
already right only finds things.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from overcast.backends.base import ProviderError
from overcast.reconciler import images
from overcast.reconciler.backoff import Backoff
from overcast.reconciler.contexts import ContextFactory
from overcast.reconciler.infra import InfraCache, recorder
from overcast.store.db import Database
from overcast.store.models import Backend, utcnow
from overcast.store.notify import notify

log = logging.getLogger("overcast.reconciler")
WORKING = ("pending", "provisioning", "deleting")


class BackendMachine:
    def __init__(self, contexts: ContextFactory, infra: InfraCache) -> None:
        self.contexts, self.infra = contexts, infra
        self.backoff = Backoff(base=2.0, cap=300.0)  # per account (backend row)

    def run_pass(self, db: Database) -> bool:
        """One step for every customer backend being set up or torn down (and not backing
        off after a failure); True if any."""
        with db.session() as session:
            ids = session.scalars(select(Backend.id).where(
                Backend.kind == "aws", Backend.state.in_(WORKING))).all()
        for backend_id in ids:
            if not self.backoff.ready(backend_id):
                continue
            try:
                with db.session() as session:
                    ok = self.step(session, session.get(Backend, backend_id))
            except Exception as exc:  # one account's bug must not stop the others
                log.exception("backend %s: step failed", backend_id)
                ok = False
                self._unexpected(db, backend_id, exc)
            if ok:
                self.backoff.succeeded(backend_id)
            else:
                self.backoff.failed(backend_id)
        return bool(ids)

    def _unexpected(self, db: Database, backend_id: int, exc: Exception) -> None:
        try:
            with db.session() as session:
                backend = session.get(Backend, backend_id)
                notify(session, backend.account_id, "reconciler-error",
                       f"An internal error ({type(exc).__name__}) interrupted the set-up of "
                       "your cloud account; overcast retries with backoff.", level="error")
                session.commit()
        except Exception:
            log.exception("backend %s: could not record the failure", backend_id)

    def step(self, session: Session, backend: Backend) -> bool:
        """One step; False after a cloud error (the caller backs off)."""
        account = backend.account
        try:
            target = self.contexts.for_account(session, account, backend.region)
            if backend.state == "pending":
                backend.state = "provisioning"
                notify(session, account.id, "backend-provisioning",
                       f"Setting up your AWS account in {backend.region}")
                session.commit()
            if backend.state == "provisioning":
                self._setup(session, backend, target)
            elif backend.state == "deleting":
                self._teardown(session, backend, target)
            return True
        except ProviderError as exc:
            session.rollback()
            if exc.retryable:
                notify(session, account.id, "aws-retry", f"Waiting on AWS, will retry: {exc}",
                       level="warning")
            else:
                backend.state, backend.reason = "error", str(exc)
                notify(session, account.id, "backend-error", str(exc), level="error")
            session.commit()
            return False

    def _setup(self, session: Session, backend: Backend, target) -> None:
        account, region = backend.account, backend.region
        report = recorder(session, account, target, region)
        slug = account.slug
        self.contexts.provider.set_up_account(target.ctx, slug, network_owner=slug,
                                              registry=backend.registry_type,
                                              s3_read=list(backend.s3_read or []),
                                              report=report)
        # The account's VM image (reconciler/images.py): setup is done once it is available.
        if not images.ready_for_setup(session, account, target, fallback=lambda: (
                self.contexts.provider.find_image(target.ctx,
                                                  owners=[self.contexts.image_owner()]))):
            session.commit()
            return
        backend.state, backend.reason = "ready", None
        self.infra.forget(account, region)  # clusters look the new network up
        notify(session, account.id, "backend-ready",
               f"Your AWS account is ready in {region}: clusters of {slug} run there now")
        session.commit()

    def _teardown(self, session: Session, backend: Backend, target) -> None:
        account, region = backend.account, backend.region
        self.contexts.provider.tear_down_account(
            target.ctx, account.slug, network_owner=account.slug,
            report=recorder(session, account, target, region))
        # Everything is gone: back to the hosted default, forgetting the credentials.
        backend.kind, backend.region, backend.zone, backend.firewall = "hosted", "us-east-1", \
            None, None
        backend.credentials_encrypted = backend.registry_secret_encrypted = None
        backend.key_id_masked = backend.role_arn = None
        backend.registry_type, backend.registry_username = "ecr", None
        backend.state, backend.reason, backend.updated_at = "ready", None, utcnow()
        self.infra.forget(account, region)
        notify(session, account.id, "backend-teardown-done",
               "Every resource overcast created in your AWS account is deleted; this account "
               "uses the hosted default again")
        session.commit()
