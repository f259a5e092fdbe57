"""Software environment images: one build per (account, lock hash), on a builder instance.

pending > building > ready | error, written on every environment row with that lock hash.
One idempotent step per pass:
  pending   the image already in the registry (ECR DescribeImages, or the Docker Hub
            manifest): ready at once, "reused image X". Else launch a builder from the
            account's overcast VM image (images.resolve: waits for it) with the build script
            as user data (envs/build.py), found again by its launch-token tag.
  building  read the builder's console: new progress lines become notifications and the
            rows' reason (`overcast env show`); "done IMAGE" -> ready, "FAILED" or a builder
            that stopped -> error with the console's last lines; the builder is terminated.
Builds run in the account (the backend's region), never on the control plane host.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from overcast import crypto
from overcast import tags as T
from overcast.backends import dockerhub
from overcast.backends import vm_images as vm
from overcast.backends.vm_images import AwsError
from overcast.envs import build
from overcast.reconciler import images
from overcast.reconciler.contexts import ContextFactory, Target
from overcast.reconciler.infra import InfraCache
from overcast.store.db import Database
from overcast.store.models import Account, Backend, SoftwareEnvironment, utcnow
from overcast.store.notify import notify

log = logging.getLogger("overcast.reconciler")
WORKING = ("pending", "building")
BUILD_TIMEOUT = 40 * 60.0  # seconds from launch to "done"
POLL_INTERVAL = 3.0
CONSOLE_LINES = 400


@dataclass(frozen=True)
class Registry:
    """Where an account's environment images go, and how a VM logs in there."""
    kind: str  # "ecr" | "docker_hub"
    repository: str  # "<host>/<path>"
    server: str  # the host `docker login` is given
    region: str | None = None
    username: str | None = None
    token: str | None = None  # Docker Hub's access token (a secret: never logged)

    def boot_info(self) -> dict:
        """What a cluster VM needs to pull (bootconfig.BootConfig.registry)."""
        return {"kind": self.kind, "server": self.server, "region": self.region,
                "username": self.username, "token": self.token}


def backend_of(session: Session, account: Account) -> Backend | None:
    return session.scalar(select(Backend).where(Backend.account_id == account.id))


def registry_for(session: Session, account: Account, target: Target) -> Registry:
    backend = backend_of(session, account)
    if backend is not None and backend.kind == "aws" and backend.registry_type == "docker_hub":
        host = dockerhub.registry_host()
        repo = backend.registry_repository or f"{backend.registry_username}/overcast"
        return Registry("docker_hub", f"{host}/{repo}", host, username=backend.registry_username,
                        token=crypto.decrypt(backend.registry_secret_encrypted or ""))
    uri = vm.find_repository_uri(target.ctx, account.slug)
    return Registry("ecr", uri, uri.split("/", 1)[0], region=target.ctx.region)


def build_region(session: Session, account: Account) -> str:
    backend = backend_of(session, account)
    return backend.region if backend is not None else "us-east-1"


def ready_image(session: Session, account_id: int, lock_hash: str) -> SoftwareEnvironment | None:
    """A row of this account and lock whose image is built, or one whose build failed."""
    rows = session.scalars(select(SoftwareEnvironment).where(
        SoftwareEnvironment.account_id == account_id, SoftwareEnvironment.lock_hash == lock_hash,
        SoftwareEnvironment.build_state.in_(("ready", "error")))
        .order_by(SoftwareEnvironment.id.desc())).all()
    return next((r for r in rows if r.build_state == "ready"), rows[0] if rows else None)


class EnvBuildMachine:
    def __init__(self, contexts: ContextFactory, infra: InfraCache,
                 build_timeout: float = BUILD_TIMEOUT, poll_interval: float = POLL_INTERVAL):
        self.contexts, self.infra = contexts, infra
        self.build_timeout, self.poll_interval = build_timeout, poll_interval
        self._next_poll: dict[tuple[int, str], float] = {}
        self._seen: dict[tuple[int, str], int] = {}  # progress lines already notified

    def run_pass(self, db: Database) -> bool:
        with db.session() as session:
            keys = session.execute(select(SoftwareEnvironment.account_id,
                                          SoftwareEnvironment.lock_hash).where(
                SoftwareEnvironment.build_state.in_(WORKING),
                SoftwareEnvironment.lock_hash.is_not(None)).distinct()).all()
        for account_id, lock_hash in keys:
            if time.monotonic() < self._next_poll.get((account_id, lock_hash), 0.0):
                continue
            self._next_poll[(account_id, lock_hash)] = time.monotonic() + self.poll_interval
            try:
                with db.session() as session:
                    self.step(session, account_id, lock_hash)
            except Exception:  # one build's bug must not stop the others
                log.exception("environment build %s/%s: step failed", account_id, lock_hash)
        return bool(keys)

    def rows(self, session: Session, account_id: int, lock_hash: str) -> list[SoftwareEnvironment]:
        """Every row of the lock still building, deleted ones too (the first one's id names
        the builder, so it stays the same while rows come and go)."""
        return list(session.scalars(select(SoftwareEnvironment).where(
            SoftwareEnvironment.account_id == account_id,
            SoftwareEnvironment.lock_hash == lock_hash,
            SoftwareEnvironment.build_state.in_(WORKING)).order_by(SoftwareEnvironment.id)))

    def step(self, session: Session, account_id: int, lock_hash: str) -> None:
        rows = self.rows(session, account_id, lock_hash)
        if not rows:
            return
        account = session.get(Account, account_id)
        target = self.contexts.for_account(session, account, build_region(session, account))
        token = _builder_token(session, rows[0])
        if all(r.deleted for r in rows):  # nobody wants this image any more: stop building
            self._fail(session, account_id, target, rows, token, "deleted before its image "
                       "was built", notify_user=False)
            session.commit()
            return
        rows = [r for r in rows if not r.deleted] + [r for r in rows if r.deleted]
        try:
            if target.hosted:  # the operator's account: the slug's repository is made here
                self.infra.ensure(session, account, target, target.ctx.region)
            registry = registry_for(session, account, target)
            if all(r.build_state == "pending" for r in rows):
                self._start(session, account, target, registry, rows, token)
            else:
                self._watch(session, account, target, registry, rows, token)
        except images.WaitingForImage:
            pass  # the VM image build tells its own progress
        except (AwsError, dockerhub.RegistryLoginError) as exc:
            if getattr(exc, "retryable", False):
                notify(session, account_id, "aws-retry",
                       f"Environment build waiting on AWS: {exc}", level="warning")
            else:
                self._fail(session, account_id, target, rows, token, str(exc))
        session.commit()

    # --- pending: reuse, or launch the builder --------------------------------------------
    def _start(self, session: Session, account: Account, target: Target, registry: Registry,
               rows: list[SoftwareEnvironment], token: str) -> None:
        row = rows[0]
        plan = build.BuildPlan(lock_hash=row.lock_hash, lock_text=row.lock_text or "",
                               repository=registry.repository, registry_kind=registry.kind,
                               registry_server=registry.server, region=registry.region,
                               username=registry.username)
        if self._in_registry(target, account, registry, row.lock_hash):
            self._ready(session, account, rows, plan.image_uri, f"reused image {plan.image_uri}"
                        " (already in the registry)", "env-image-reused")
            return
        ami = images.resolve(session, account, target)
        subnets, profile = self._placement(session, account, target)
        try:
            builder = build.build_environment(
                target.ctx, plan, image_id=ami, subnet_id=subnets[sorted(subnets)[0]],
                instance_profile=profile, client_token=token,
                tags=T.resource_tags(account.slug, **{"overcast:lock-hash": row.lock_hash[:32]}),
                registry_token=registry.token if registry.kind == "docker_hub" else None)
        except AwsError as exc:
            if exc.code not in images.AMI_GONE:
                raise
            # The VM image was deregistered behind our back: build it again, then this.
            images.forget_gone(session, ami, exc.code)
            notify(session, account.id, "image-gone", f"The overcast VM image {ami} is gone "
                   f"from AWS ({exc.code}); building it again.", level="warning")
            return
        for r in rows:
            r.build_state, r.reason = "building", f"builder {builder} launched"
        notify(session, account.id, "env-builder-launched",
               f"Building the image of lock {row.lock_hash[:12]} ({', '.join(self._names(rows))})"
               f" on builder {builder} for {registry.repository}")

    @staticmethod
    def _in_registry(target: Target, account: Account, registry: Registry, tag: str) -> bool:
        if registry.kind == "ecr":
            return vm.image_exists(target.ctx, account.slug, tag)
        repo = registry.repository.split("/", 1)[1]
        return dockerhub.has_tag(registry.username or "", registry.token or "", repo, tag)

    def _placement(self, session: Session, account: Account, target: Target
                   ) -> tuple[dict[str, str], str | None]:
        if target.hosted:
            infra = self.infra.ensure(session, account, target, target.ctx.region)
            return infra.network.public_subnets, infra.instance_profile
        net = vm.find_network(target.ctx, account.slug)
        if net is None or not net.public_subnets:
            raise AwsError(f"No overcast network in {target.ctx.region} for the environment "
                           "builder: run `overcast setup aws` again.")
        return net.public_subnets, account.slug

    # --- building: follow the console ------------------------------------------------------
    def _watch(self, session: Session, account: Account, target: Target, registry: Registry,
               rows: list[SoftwareEnvironment], token: str) -> None:
        info = vm.find_builder(target.ctx, token)
        if info is None:
            raise AwsError("the environment builder is gone")
        console = vm.console_output(target.ctx, info.aws_id, lines=CONSOLE_LINES)
        state = build.progress(console)
        key = (account.id, rows[0].lock_hash)
        for line in state.steps[self._seen.get(key, 0):]:
            if not line.startswith(("done ", "FAILED")):
                notify(session, account.id, "env-build-progress",
                       f"Environment image {rows[0].lock_hash[:12]}: {line}")
        self._seen[key] = len(state.steps)
        if state.steps:
            for r in rows:
                r.reason = f"builder {info.aws_id}: {state.steps[-1]}"
        if state.done:
            vm.terminate(target.ctx, [info.aws_id])
            self._ready(session, account, rows, state.done, f"built image {state.done}",
                        "env-image-built")
            return
        if state.failed or info.state in ("shutting-down", "terminated", "stopping", "stopped"):
            raise AwsError(f"The environment builder {info.aws_id} failed: "
                           f"{state.failed or info.state}\n{_tail(console)}")
        # This attempt's start (on the row holding its token); rows building since before
        # migration 0014 have none, and count from their creation.
        started = max((r.build_started_at for r in rows if r.build_started_at), default=None) \
            or min(r.created_at for r in rows)
        if utcnow() - started > timedelta(seconds=self.build_timeout):
            raise AwsError(f"The environment builder {info.aws_id} did not finish within "
                           f"{self.build_timeout:.0f} s\n{_tail(console)}")

    # --- endings ---------------------------------------------------------------------------
    def _ready(self, session: Session, account: Account, rows: list[SoftwareEnvironment],
               image_uri: str, what: str, event: str) -> None:
        for r in rows:
            r.image_uri, r.build_state, r.reason = image_uri, "ready", None
        self._seen.pop((account.id, rows[0].lock_hash), None)
        notify(session, account.id, event,
               f"Software environment {', '.join(self._names(rows))}: {what}")

    def _fail(self, session: Session, account_id: int, target: Target,
              rows: list[SoftwareEnvironment], token: str, reason: str,
              notify_user: bool = True) -> None:
        try:
            info = vm.find_builder(target.ctx, token)
            if info is not None and info.state != "terminated":
                vm.terminate(target.ctx, [info.aws_id])
        except AwsError as exc:  # the failure itself is what to report
            log.warning("environment builder %s: cleaning up: %s", token, exc)
        for r in rows:
            r.build_state, r.reason = "error", reason[:4000]
        if not notify_user:
            return
        notify(session, account_id, "env-build-failed",
               f"Software environment {', '.join(self._names(rows))}: {reason}", level="error")

    @staticmethod
    def _names(rows: list[SoftwareEnvironment]) -> list[str]:
        return [f"{r.name} v{r.version}" for r in rows]


def _builder_token(session: Session, first: SoftwareEnvironment) -> str:
    """The ClientToken of this attempt's builder, on the lock's first building row. A fresh
    one per attempt, committed before RunInstances (a crash then finds the same builder);
    rows building since before migration 0014 keep the token they were launched with."""
    if first.builder_token:
        return first.builder_token
    legacy = f"overcast-env-{first.id}-{(first.lock_hash or '')[:12]}"
    if first.build_state != "pending":
        return legacy
    first.builder_token = f"{legacy}-{secrets.token_hex(4)}"
    first.build_started_at = utcnow()
    session.commit()
    return first.builder_token


def _tail(console: str, lines: int = 15) -> str:
    return "Last console lines of the builder:\n" + "\n".join(console.splitlines()[-lines:])


class WaitingForEnvironment(Exception):
    """The cluster's environment image is still being built."""


class EnvironmentFailed(Exception):
    """The cluster's environment image could not be built; the message says why."""


def cluster_software(session: Session, account: Account, software: dict | None,
                     target: Target | None = None) -> tuple[str, dict] | None:
    """(image, registry login info) a cluster's VMs run, None for the VM image's packages
    (no environment, or a --container one, whose check is not wired yet); raises
    WaitingForEnvironment while its build is on its way, EnvironmentFailed if it failed.
    With `target` (a cluster's first launch), a built image is looked up in the registry
    first: one deleted there since (or a registry that was reset) is built again."""
    if not software or not software.get("lock_hash"):
        return None
    rows = session.scalars(select(SoftwareEnvironment).where(
        SoftwareEnvironment.account_id == account.id,
        SoftwareEnvironment.lock_hash == software["lock_hash"])
        .order_by(SoftwareEnvironment.id.desc())).all()
    ready = next((r for r in rows if r.build_state == "ready" and r.image_uri), None)
    if ready is None:
        if any(r.build_state in WORKING for r in rows) or not rows:
            raise WaitingForEnvironment(software["lock_hash"])
        raise EnvironmentFailed(f"The image of software environment {software['name']} v"
                                f"{software['version']} could not be built: "
                                f"{(rows[0].reason or 'unknown').splitlines()[0]}")
    if target is not None:
        registry = registry_for(session, account, target)
        if not EnvBuildMachine._in_registry(target, account, registry, ready.lock_hash):
            _build_again(session, account, rows, ready.image_uri)
            raise WaitingForEnvironment(software["lock_hash"])
        ready.image_uri = f"{registry.repository}:{ready.lock_hash}"
    return ready.image_uri, pull_info(session, account, ready.image_uri)


def _build_again(session: Session, account: Account, rows: list[SoftwareEnvironment],
                 image_uri: str) -> None:
    for r in rows:
        if r.build_state == "ready":
            r.build_state, r.image_uri, r.reason = "pending", None, "image gone: building again"
            r.builder_token = r.build_started_at = None  # a new attempt, a new builder
    notify(session, account.id, "env-image-gone",
           f"The environment image {image_uri} is no longer in the registry; building it again.",
           level="warning")
    session.commit()


def pull_info(session: Session, account: Account, image_uri: str) -> dict:
    host = image_uri.split("/", 1)[0]
    backend = backend_of(session, account)
    if backend is not None and backend.kind == "aws" and backend.registry_type == "docker_hub":
        return Registry("docker_hub", "", host, username=backend.registry_username,
                        token=crypto.decrypt(backend.registry_secret_encrypted or "")
                        ).boot_info()
    return Registry("ecr", "", host, region=build_region(session, account)).boot_info()
