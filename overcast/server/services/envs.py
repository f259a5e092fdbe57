"""Software environments of an account: create (checked and locked), list, show, delete.

Shared by the REST API and the cluster request (package sync, `software="NAME"`). Each create
of an existing name with a different spec adds a version; the same spec returns the latest
version unchanged. A lock whose hash already has an image in the account reuses it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from overcast.envs import lock
from overcast.envs import spec as specs
from overcast.server.views import iso
from overcast.store.models import Account, SoftwareEnvironment
from overcast.store.notify import notify

SYNC_PREFIX = "sync-"  # package-sync environments are named after their lock hash


class EnvError(Exception):
    """Bad spec or name; `message` is for the user, `status` the HTTP code."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


def env_view(row: SoftwareEnvironment, with_lock: bool = True) -> dict[str, Any]:
    view = {"name": row.name, "version": row.version, "kind": row.spec.get("kind"),
            "spec": row.spec, "lock_hash": row.lock_hash, "image_uri": row.image_uri,
            "build_state": row.build_state, "reason": row.reason,
            "created_at": iso(row.created_at), "updated_at": iso(row.updated_at)}
    if with_lock:
        view["lock"] = row.lock_text
    return view


def _latest(session: Session, account: Account, name: str) -> SoftwareEnvironment | None:
    return session.scalar(select(SoftwareEnvironment).where(
        SoftwareEnvironment.account_id == account.id, SoftwareEnvironment.name == name,
        SoftwareEnvironment.deleted.is_(False)).order_by(SoftwareEnvironment.version.desc())
        .limit(1))


def get_environment(session: Session, account: Account, name: str,
                    version: int | None = None) -> SoftwareEnvironment:
    if version is None:
        row = _latest(session, account, name)
    else:
        row = session.scalar(select(SoftwareEnvironment).where(
            SoftwareEnvironment.account_id == account.id, SoftwareEnvironment.name == name,
            SoftwareEnvironment.version == version, SoftwareEnvironment.deleted.is_(False)))
    if row is None:
        what = f"{name!r}" + (f" version {version}" if version is not None else "")
        raise EnvError(f"No software environment {what} in account {account.slug}: see "
                       f"`overcast env ls`.", 404)
    return row


def list_environments(session: Session, account: Account) -> list[SoftwareEnvironment]:
    """The latest version of each environment, newest first."""
    newest = (select(SoftwareEnvironment.name, func.max(SoftwareEnvironment.version)
                     .label("v")).where(SoftwareEnvironment.account_id == account.id,
                                        SoftwareEnvironment.deleted.is_(False))
              .group_by(SoftwareEnvironment.name).subquery())
    return list(session.scalars(select(SoftwareEnvironment).join(
        newest, (SoftwareEnvironment.name == newest.c.name)
        & (SoftwareEnvironment.version == newest.c.v))
        .where(SoftwareEnvironment.account_id == account.id)
        .order_by(SoftwareEnvironment.id.desc())))


def delete_environment(session: Session, account: Account, name: str) -> int:
    """Mark every version deleted (their images stay in the registry: other versions or
    clusters may share them by lock hash). Returns how many versions were deleted."""
    get_environment(session, account, name)
    rows = session.scalars(select(SoftwareEnvironment).where(
        SoftwareEnvironment.account_id == account.id, SoftwareEnvironment.name == name,
        SoftwareEnvironment.deleted.is_(False))).all()
    for row in rows:
        row.deleted = True
    notify(session, account.id, "env-deleted",
           f"Software environment {name} deleted ({len(rows)} version(s))")
    return len(rows)


def lock_spec(spec: dict[str, Any]) -> str | None:
    """The lock text of a normalised spec (None for a given container image)."""
    if spec["kind"] == "container":
        return None
    if spec["kind"] == "package_sync":
        local = specs.local_only_names(spec)
        if local:
            raise EnvError(
                "These packages are installed from local files (editable or a path) and "
                f"cannot be synced to the cluster: {', '.join(local)}. Install them from "
                "an index, or use `software=` with an environment that lists them.")
        return lock.package_sync_lock(spec)
    try:
        return lock.resolve(spec)
    except lock.LockError as exc:
        raise EnvError(str(exc)) from None


def create_environment(session: Session, account: Account, name: str,
                       raw_spec: Any) -> tuple[SoftwareEnvironment, bool]:
    """(row, created): a new version, or the latest one when its spec is the same."""
    try:
        specs.check_name(name)
        spec = specs.normalise(raw_spec)
    except specs.SpecError as exc:
        raise EnvError(str(exc)) from None
    latest = _latest(session, account, name)
    if latest is not None and latest.spec == spec:
        return latest, False
    lock_text = lock_spec(spec)
    top = session.scalar(select(func.max(SoftwareEnvironment.version)).where(
        SoftwareEnvironment.account_id == account.id, SoftwareEnvironment.name == name))
    row = SoftwareEnvironment(account_id=account.id, name=name, version=(top or 0) + 1,
                              spec=spec, lock_text=lock_text,
                              lock_hash=lock.lock_hash(lock_text) if lock_text else None)
    session.add(row)
    _place_image(session, account, row)
    session.flush()
    return row, True


def _place_image(session: Session, account: Account, row: SoftwareEnvironment) -> None:
    """Reuse an image with the same lock hash, or leave the row pending for a build."""
    if row.spec["kind"] == "container":
        row.image_uri, row.build_state = row.spec["image"], "pending"
        row.reason = "the image is checked for dask and distributed on a builder"
        return
    built = session.scalar(select(SoftwareEnvironment).where(
        SoftwareEnvironment.account_id == account.id,
        SoftwareEnvironment.lock_hash == row.lock_hash,
        SoftwareEnvironment.build_state == "ready",
        SoftwareEnvironment.image_uri.is_not(None)).limit(1))
    if built is not None:
        row.image_uri, row.build_state = built.image_uri, "ready"
        notify(session, account.id, "env-image-reused",
               f"Software environment {row.name} v{row.version}: reused image "
               f"{built.image_uri} (same lock {row.lock_hash[:12]})")
        return
    row.build_state = "pending"
    row.reason = "waiting for a build of lock " + row.lock_hash[:12]
    notify(session, account.id, "env-build-requested",
           f"Software environment {row.name} v{row.version}: image for lock "
           f"{row.lock_hash[:12]} to be built")


def for_cluster(session: Session, account: Account, software: str | None,
                package_sync: dict[str, Any] | None) -> dict[str, Any] | None:
    """The environment a cluster runs: a named one, or the package sync the client sent."""
    if software:
        row = get_environment(session, account, software)
    elif package_sync is not None:
        spec = dict(package_sync, kind="package_sync")
        try:
            spec = specs.normalise(spec)
        except specs.SpecError as exc:
            raise EnvError(str(exc)) from None
        text = lock_spec(spec)
        name = SYNC_PREFIX + lock.lock_hash(text)[:12]
        row, _ = create_environment(session, account, name, spec)
    else:
        return None
    return {"name": row.name, "version": row.version, "lock_hash": row.lock_hash,
            "image_uri": row.image_uri, "build_state": row.build_state}


def cluster_note(software: dict[str, Any]) -> tuple[str, str]:
    """(level, message) of the notification a cluster's environment gets at request time."""
    what = f"Software environment {software['name']} v{software['version']}"
    if software.get("lock_hash") is None:
        # A given --container image: its check on a builder is not wired yet.
        return "warning", (f"{what} is a given container image, which clusters do not run "
                           f"yet: this cluster runs the VM image's packages; see "
                           f"docs/software-environments.md")
    if software["build_state"] == "ready":
        return "info", f"{what}: reused image {software['image_uri']} (no build)"
    return "info", (f"{what}: its image is being built ({software['build_state']}); the "
                    f"cluster's VMs start once it is in the registry")
