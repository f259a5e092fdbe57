"""The VM image pipeline: one overcast image per AWS account (or the operator) and region.

pending > building > creating > available | error. One step per pass, each idempotent:
  pending   the public URL must be reachable from VMs; resolve the stock Debian 12 AMI (SSM);
            launch a builder (tagged, launch-token) whose user data runs agent/bootstrap.sh
  building  wait for the builder's report (POST /api/v1/images/builds/{id}/report with a
            one-time token) or its console marker; failure/timeout: error with the console tail
  creating  CreateImage (named overcast-agent-<version>-<timestamp>), wait until available;
            then keep the newest two images and terminate the builder.
Hosted accounts share the operator's image of a region (scope "operator"), built on first use;
an own AWS account gets its image during backend setup. Clusters ask `resolve()` for the AMI.
"""

from __future__ import annotations

import logging
import secrets
import shlex
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

import overcast
from overcast import crypto, reachability
from overcast import tags as T
from overcast.backends import vm_images as images
from overcast.backends.vm_images import AwsError
from overcast.reconciler.contexts import ContextFactory, Target
from overcast.reconciler.infra import InfraCache
from overcast.store.db import Database
from overcast.store.models import Account, Image, utcnow
from overcast.store.notify import notify

log = logging.getLogger("overcast.reconciler")
WORKING = ("pending", "building", "creating")
BOOTSTRAP = Path(overcast.__file__).parent / "agent" / "bootstrap.sh"
OK_MARKER = "overcast-bootstrap: OK"
FAILED_MARKER = "overcast-bootstrap: FAILED"
BUILD_TIMEOUT = 30 * 60.0  # seconds a builder may take from launch to its report
POLL_INTERVAL = 5.0  # seconds between looks at a builder's console or a pending AMI


class WaitingForImage(AwsError):
    """The cluster waits for its account's image (a retryable step)."""

    retryable = True


def scope_of(target: Target, account: Account) -> str:
    return T.OPERATOR if target.hosted else account.slug


def request_build(session: Session, account: Account, scope: str, region: str,
                  version: str | None = None) -> Image:
    """A new build (or the one already on its way for this scope, region and version)."""
    version = version or overcast.__version__
    row = session.scalar(select(Image).where(
        Image.scope == scope, Image.region == region, Image.version == version,
        Image.state.in_(WORKING)))
    if row is None:
        row = Image(account_id=account.id, scope=scope, region=region, version=version,
                    state="pending")
        session.add(row)
        notify(session, account.id, "image-build-requested",
               f"Building the overcast VM image {version} in {region}"
               f"{' (hosted)' if scope == T.OPERATOR else ' in your AWS account'}")
        session.commit()
    return row


def newest_available(session: Session, scope: str, region: str,
                     version: str | None = None) -> Image | None:
    return session.scalar(select(Image).where(
        Image.scope == scope, Image.region == region,
        Image.version == (version or overcast.__version__), Image.state == "available")
        .order_by(Image.id.desc()).limit(1))


def forget_scope(session: Session, scope: str) -> None:
    """The account's own AWS backend was torn down: its images are no longer ours to use (the
    next setup may be another AWS account, where those AMIs do not exist), so it builds anew."""
    for row in session.scalars(select(Image).where(
            Image.scope == scope, Image.state.in_((*WORKING, "available")))):
        row.state, row.reason = "deregistered", "the AWS backend was torn down"


# EC2's answers to a launch from an AMI that was deregistered (outside overcast, or in a
# cloud that was reset): the image row is stale and a new build replaces it.
AMI_GONE = ("InvalidAMIID.NotFound", "InvalidAMIID.Unavailable")


def forget_gone(session: Session, aws_id: str, code: str) -> None:
    """The AMI `aws_id` no longer exists in AWS: its rows stop being used (the next launch
    requests a build)."""
    for row in session.scalars(select(Image).where(Image.aws_id == aws_id,
                                                   Image.state == "available")):
        row.state, row.reason = "deregistered", f"the AMI is gone from AWS ({code})"


def resolve(session: Session, account: Account, target: Target) -> str:
    """The AMI a cluster of `account` launches from: its built image of this version; else
    build one now and wait for it (WaitingForImage). There is no other way to boot."""
    region = target.ctx.region
    scope = scope_of(target, account)
    built = newest_available(session, scope, region)
    if built is not None and built.aws_id:
        return built.aws_id
    latest = session.scalar(select(Image).where(
        Image.scope == scope, Image.region == region, Image.version == overcast.__version__)
        .order_by(Image.id.desc()).limit(1))
    if latest is not None and latest.state == "error":
        raise AwsError(f"The overcast VM image build in {region} failed: "
                       f"{(latest.reason or '').splitlines()[0] if latest.reason else 'unknown'}"
                       ". Fix that and run `overcast image build` to try again.")
    row = request_build(session, account, scope, region)
    raise WaitingForImage(f"Waiting for the overcast VM image ({row.state}) in {region}.")


def ready_for_setup(session: Session, account: Account, target: Target) -> bool:
    """Backend setup: True once the account has an image; else a build is on its way."""
    try:
        resolve(session, account, target)
    except WaitingForImage:
        return False
    return True


def builder_user_data(row: Image, control_plane: str, token: str, ca: str | None) -> str:
    """The builder's cloud-config: the settings file, the CA, the bootstrap script, run it."""
    import yaml

    env = {"OVERCAST_CONTROL_PLANE": control_plane, "OVERCAST_VERSION": row.version,
           "OVERCAST_BUILD_ID": str(row.id), "OVERCAST_BUILD_TOKEN": token}
    files = [{"path": "/etc/overcast/build.env", "permissions": "0600",
              "content": "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items())},
             {"path": "/opt/overcast/bootstrap.sh", "permissions": "0755",
              "content": BOOTSTRAP.read_text()}]
    if ca:
        files.append({"path": "/etc/overcast/control-plane-ca.pem", "permissions": "0644",
                      "content": ca})
    doc = {"write_files": files, "runcmd": [["/bin/sh", "/opt/overcast/bootstrap.sh"]]}
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False, width=1 << 20)


class ImageMachine:
    def __init__(self, contexts: ContextFactory, infra: InfraCache, control_plane: str,
                 control_plane_ca: str | None = None, build_timeout: float = BUILD_TIMEOUT,
                 poll_interval: float = POLL_INTERVAL):
        self.contexts, self.infra = contexts, infra
        self.control_plane, self.control_plane_ca = control_plane, control_plane_ca
        self.build_timeout, self.poll_interval = build_timeout, poll_interval
        self._next_poll: dict[int, float] = {}  # build id -> monotonic time of its next look

    def _due(self, row: Image) -> bool:
        """Waiting on AWS (a builder's console, CreateImage) is polled every poll_interval,
        not on every pass; a builder's report is acted on at once."""
        if row.state == "building" and row.reported:
            return True
        now = time.monotonic()
        if now < self._next_poll.get(row.id, 0.0):
            return False
        self._next_poll[row.id] = now + self.poll_interval
        return True

    def run_pass(self, db: Database) -> bool:
        """One step for every unfinished build; True if any."""
        with db.session() as session:
            ids = session.scalars(select(Image.id).where(Image.state.in_(WORKING))).all()
        for image_id in ids:
            try:
                with db.session() as session:
                    self.step(session, session.get(Image, image_id))
            except Exception:  # one build's bug must not stop the others
                log.exception("image %s: step failed", image_id)
        return bool(ids)

    def target(self, session: Session, row: Image) -> Target:
        if row.scope == T.OPERATOR:
            return Target(self.contexts.operator(row.region), T.OPERATOR, True)
        account = session.get(Account, row.account_id)
        return self.contexts.for_account(session, account, row.region)

    def step(self, session: Session, row: Image) -> None:
        target: Target | None = None
        try:
            target = self.target(session, row)
            if row.state == "pending":
                self._launch(session, row, target)
            elif row.state == "building" and self._due(row):
                self._watch(session, row, target)
            elif row.state == "creating" and self._due(row):
                self._finish(session, row, target)
        except AwsError as exc:
            if exc.retryable:
                self._notify(session, row, "aws-retry", f"Image build waiting on AWS: {exc}",
                             "warning")
            else:
                self._fail(session, row, target, str(exc))
        session.commit()

    # --- pending: builder ------------------------------------------------------------------
    def _launch(self, session: Session, row: Image, target: Target) -> None:
        problem = reachability.refusal(self.control_plane, target.ctx)
        if problem:
            raise AwsError(problem)
        subnets, profile = self._placement(session, row, target)
        if not subnets:
            raise AwsError(f"The overcast network in {row.region} has no public subnet for "
                           "the image builder; run the backend setup again.")
        row.source_image = row.source_image or images.stock_debian_ami(target.ctx)
        if not row.token_encrypted:
            row.token_encrypted = crypto.encrypt(secrets.token_urlsafe(32))
            session.commit()  # the token is in the user data: keep it before launching
        info = images.launch_builder(
            target.ctx, image_id=row.source_image, subnet_id=subnets[sorted(subnets)[0]],
            instance_profile=profile,
            user_data=builder_user_data(row, self.control_plane,
                                        crypto.decrypt(row.token_encrypted),
                                        self.control_plane_ca),
            tags=images.image_tags(row.scope, row.version), client_token=f"overcast-image-{row.id}")
        row.builder_id, row.state = info.aws_id, "building"
        self._notify(session, row, "image-builder-launched",
                     f"Image builder {info.aws_id} launched from Debian 12 {row.source_image}")

    def _placement(self, session: Session, row: Image, target: Target
                   ) -> tuple[dict[str, str], str | None]:
        """Public subnets and instance profile for the builder. Hosted: the operator's network
        (made if missing). Own account: found directly, since its setup (which waits for this
        image) is still running."""
        account = session.get(Account, row.account_id)
        if target.hosted:
            infra = self.infra.ensure(session, account, target, row.region)
            return infra.network.public_subnets, infra.instance_profile
        net = images.find_network(target.ctx, row.scope)
        if net is None:
            raise AwsError(f"No overcast network in {row.region} for the image builder; run "
                           "`overcast setup aws` first.")
        return net.public_subnets, row.scope

    # --- building: wait for the builder's report ------------------------------------------
    def _watch(self, session: Session, row: Image, target: Target) -> None:
        if row.reported == "failed":
            raise AwsError(f"The image builder {row.builder_id} failed: {row.reason}")
        console = None
        if row.reported != "ok":
            info = images.describe_instance(target.ctx, row.builder_id)
            console = images.console_output(target.ctx, row.builder_id)
            if FAILED_MARKER in console or info is None or info.state in (
                    "shutting-down", "terminated", "stopping", "stopped"):
                raise AwsError(f"The image builder {row.builder_id} failed "
                               f"({info.state if info else 'gone'})")
            if OK_MARKER not in console:
                if utcnow() - row.created_at > timedelta(seconds=self.build_timeout):
                    raise AwsError(f"The image builder {row.builder_id} did not finish within "
                                   f"{self.build_timeout:.0f} s")
                return
        row.name = row.name or images.image_name(row.version, utcnow())
        session.commit()  # the name first: a retried CreateImage finds the image by it
        row.aws_id = images.create_image(target.ctx, row.builder_id, row.name,
                                         images.image_tags(row.scope, row.version))
        row.state, row.token_encrypted = "creating", None
        self._notify(session, row, "image-creating",
                     f"Builder {row.builder_id} finished; creating image {row.aws_id} "
                     f"({row.name})")

    # --- creating: wait for the AMI, prune, clean up ---------------------------------------
    def _finish(self, session: Session, row: Image, target: Target) -> None:
        info = images.describe_image(target.ctx, row.aws_id)
        if info is None or info.state in ("failed", "error", "invalid", "deregistered"):
            raise AwsError(f"Image {row.aws_id} failed: "
                           f"{(info.reason if info else None) or 'it is gone'}")
        if info.state != "available":
            return
        images.terminate(target.ctx, [row.builder_id])
        removed = images.prune_images(target.ctx, row.scope, protect=row.aws_id)
        for old in session.scalars(select(Image).where(Image.aws_id.in_(removed))):
            old.state = "deregistered"
        row.state, row.finished_at, row.reason = "available", utcnow(), None
        self._notify(session, row, "image-available",
                     f"overcast VM image {row.aws_id} ({row.name}) is available in {row.region}"
                     + (f"; deregistered older {', '.join(removed)}" if removed else ""))

    # --- helpers ---------------------------------------------------------------------------
    def _fail(self, session: Session, row: Image, target: Target | None, reason: str) -> None:
        tail = ""
        if target is not None and row.builder_id:
            try:
                tail = images.console_output(target.ctx, row.builder_id, lines=15)
                images.terminate(target.ctx, [row.builder_id])
            except AwsError as exc:  # the failure itself is what to report
                log.warning("image %s: cleaning up the builder: %s", row.id, exc)
        row.state, row.finished_at, row.token_encrypted = "error", utcnow(), None
        row.reason = reason + (f"\nLast console lines of the builder:\n{tail}" if tail else "")
        self._notify(session, row, "image-build-failed", row.reason, "error")

    @staticmethod
    def _notify(session: Session, row: Image, event: str, message: str,
                level: str = "info") -> None:
        if row.account_id is not None:
            notify(session, row.account_id, event, message, level=level)
