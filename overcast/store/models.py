"""The control plane's data: users, accounts, backends, clusters, instances, notifications."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from overcast import clock


def utcnow() -> datetime:
    return clock.now()


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    default_account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    memberships: Mapped[list[Membership]] = relationship(back_populates="user")


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    is_team: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    memberships: Mapped[list[Membership]] = relationship(back_populates="account")


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "account_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    role: Mapped[str] = mapped_column(String(16), default="member")  # admin | member
    user: Mapped[User] = relationship(back_populates="memberships")
    account: Mapped[Account] = relationship(back_populates="memberships")


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(64), default="default")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex, never the token
    prefix: Mapped[str] = mapped_column(String(12))  # shown in lists so users can tell tokens apart
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    user: Mapped[User] = relationship()


class Backend(Base):
    """One per account; no row means the hosted default in us-east-1."""

    __tablename__ = "backends"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="hosted")  # hosted | aws
    region: Mapped[str] = mapped_column(String(32), default="us-east-1")
    zone: Mapped[str | None] = mapped_column(String(32))
    firewall: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    registry_type: Mapped[str] = mapped_column(String(16), default="ecr")
    registry_username: Mapped[str | None] = mapped_column(String(128))
    registry_repository: Mapped[str | None] = mapped_column(String(255))  # Docker Hub's
    credentials_encrypted: Mapped[str | None] = mapped_column(Text)  # Fernet, JSON inside
    key_id_masked: Mapped[str | None] = mapped_column(String(32))
    external_id: Mapped[str | None] = mapped_column(String(64))  # role mode; not a secret
    role_arn: Mapped[str | None] = mapped_column(String(255))
    registry_secret_encrypted: Mapped[str | None] = mapped_column(Text)  # Fernet
    # Buckets the account's instance role may read (s3:GetObject/ListBucket); none if empty.
    s3_read: Mapped[list[str] | None] = mapped_column(JSON)
    # pending > provisioning > ready | error; "deleting" while --teardown runs
    state: Mapped[str] = mapped_column(String(16), default="ready")
    reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    account: Mapped[Account] = relationship()


class BackendResource(Base):
    __tablename__ = "backend_resources"
    __table_args__ = (UniqueConstraint("scope", "region", "kind", "aws_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    scope: Mapped[str] = mapped_column(String(80))  # account slug, or "operator" for the hosted net
    region: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))
    aws_id: Mapped[str] = mapped_column(String(255))
    zone: Mapped[str | None] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="ready")
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Cluster(Base):
    __tablename__ = "clusters"
    # An account's active clusters (the default list) without reading its finished history.
    __table_args__ = (Index("ix_clusters_account_state", "account_id", "state"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    region: Mapped[str] = mapped_column(String(32))
    # The AWS account its instances run in (from the first launch's answer): an agent's
    # identity document must name it (server/identity.py).
    aws_account_id: Mapped[str | None] = mapped_column(String(32))
    zone: Mapped[str | None] = mapped_column(String(32))
    n_workers: Mapped[int] = mapped_column(Integer, default=0)
    # What the user asked ("running" | "stopped"): written by the API. `state` is what the
    # reconciler saw and did: written only by the reconciler.
    desired_state: Mapped[str] = mapped_column(String(16), default="running")
    state: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str | None] = mapped_column(Text)
    final_state: Mapped[str] = mapped_column(String(16), default="stopped")  # after stopping
    token_hash: Mapped[str] = mapped_column(String(64))
    # The cluster token goes into each VM's user data, so it is kept (encrypted), not hashed.
    token_encrypted: Mapped[str] = mapped_column(Text)
    tls_encrypted: Mapped[str] = mapped_column(Text)
    security_group_id: Mapped[str | None] = mapped_column(String(64))
    scheduler_address: Mapped[str | None] = mapped_column(String(255))
    scheduler_internal_address: Mapped[str | None] = mapped_column(String(255))
    dashboard_link: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_activity_at: Mapped[datetime | None] = mapped_column(DateTime)
    activity: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the scheduler's heartbeat
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    account: Mapped[Account] = relationship()
    instances: Mapped[list[Instance]] = relationship(back_populates="cluster",
                                                     order_by="Instance.id")


class Instance(Base):
    __tablename__ = "instances"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))  # scheduler | worker
    aws_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    instance_type: Mapped[str] = mapped_column(String(32))
    zone: Mapped[str | None] = mapped_column(String(32))
    subnet_id: Mapped[str | None] = mapped_column(String(64))
    spot: Mapped[bool] = mapped_column(Boolean, default=False)
    # The ClientToken of the batch RunInstances this row is launched in, committed before the
    # call; set with no aws_id after a pass means the call's result was never recorded (a
    # crash): the instances are found again by the token's tag (reconciler/batches.py).
    launch_token: Mapped[str | None] = mapped_column(String(64))
    # Observed: written only by the reconciler. desired_state "stopped": the user removed it
    # (scale with `remove`); reported_*: what its agent said (ready, failed), applied by the
    # reconciler on its next pass.
    state: Mapped[str] = mapped_column(String(16), default="requested")
    reason: Mapped[str | None] = mapped_column(Text)
    desired_state: Mapped[str] = mapped_column(String(16), default="running")
    reported_state: Mapped[str | None] = mapped_column(String(16))
    reported_reason: Mapped[str | None] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(String(255))
    last_heartbeat: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    cluster: Mapped[Cluster] = relationship(back_populates="instances")


class Notification(Base):
    __tablename__ = "notifications"
    # A cluster's newest notification (its detail's last_event, notify's repeat check).
    __table_args__ = (Index("ix_notifications_cluster_id", "cluster_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    cluster_id: Mapped[int | None] = mapped_column(ForeignKey("clusters.id"))
    cluster_name: Mapped[str | None] = mapped_column(String(64))
    level: Mapped[str] = mapped_column(String(8), default="info")  # info | warning | error
    event_type: Mapped[str] = mapped_column(String(48))
    message: Mapped[str] = mapped_column(Text)
    time: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    # A repeat of the same event (same cluster, type and message) counts here, not as a row.
    count: Mapped[int] = mapped_column(Integer, default=1)
    last_at: Mapped[datetime | None] = mapped_column(DateTime)


class ControlPlaneMark(Base):
    """One row: when the control plane was last up and answering, and when its last gap (a
    stop, a crash, a stall) ended. Heartbeat silence during a gap is not held against VMs."""

    __tablename__ = "control_plane_marks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alive_at: Mapped[datetime] = mapped_column(DateTime)
    gap_ended_at: Mapped[datetime | None] = mapped_column(DateTime)


class WebSession(Base):
    """A dashboard sign-in: the cookie holds a random key, the table only its SHA-256."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime)
    user: Mapped[User] = relationship()


class IdempotencyKey(Base):
    """The `Idempotency-Key` of a cluster create (unique per account) and the cluster it
    made: a retried or duplicated create returns that cluster instead of making another."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("account_id", "key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    key: Mapped[str] = mapped_column(String(128))
    request_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the request body
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class SoftwareEnvironment(Base):
    """A named, versioned package spec of an account; each version is one row.

    `lock_hash` (sha256 of the lock text) is the content address: the image tag, so two
    versions (or two accounts' package syncs) with the same lock share one image build.
    """

    __tablename__ = "software_environments"
    __table_args__ = (UniqueConstraint("account_id", "name", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"kind": "pip"|"requirements"|...}
    lock_text: Mapped[str | None] = mapped_column(Text)
    lock_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    image_uri: Mapped[str | None] = mapped_column(String(512))
    # pending > building > ready | error (a --container image is "ready" once checked)
    build_state: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str | None] = mapped_column(Text)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    # The ClientToken (and launch-token tag) of this build attempt's builder, committed before
    # its RunInstances; a new one per attempt: EC2 lists a terminated builder for about an
    # hour, and a rebuild must not find the previous attempt's. Set on the lock's first row.
    builder_token: Mapped[str | None] = mapped_column(String(64))
    build_started_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Image(Base):
    """An overcast VM image (AMI) built, or being built, in one AWS account and region.

    pending > building > creating > available | error; `deregistered` once pruned (the newest
    two are kept). `scope` is whose AWS account: the slug, or "operator" for the hosted default
    (one image per region, shared by hosted accounts). Only the reconciler writes it, except
    the builder's one-time report (`reported`).
    """

    __tablename__ = "images"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The account that asked (its notifications tell the progress); scope says whose AWS.
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    scope: Mapped[str] = mapped_column(String(80))
    region: Mapped[str] = mapped_column(String(32))
    version: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str | None] = mapped_column(Text)
    aws_id: Mapped[str | None] = mapped_column(String(32))  # the AMI, once CreateImage ran
    name: Mapped[str | None] = mapped_column(String(128))
    builder_id: Mapped[str | None] = mapped_column(String(32))
    source_image: Mapped[str | None] = mapped_column(String(32))  # the stock Debian AMI
    # The builder's one-time report token, encrypted (it is in the builder's user data, and a
    # retried launch finds the same builder); cleared once the builder reported.
    token_encrypted: Mapped[str | None] = mapped_column(Text)
    reported: Mapped[str | None] = mapped_column(String(16))  # "ok" | "failed" from the builder
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
