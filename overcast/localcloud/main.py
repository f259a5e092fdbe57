"""The local cloud in one process: moto server + seeding + IMDS + instance runner + control API."""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import Any, Self

from overcast import settings
from overcast.localcloud import motofixes, motoimages, motoserver, motospeed
from overcast.localcloud import seed as seeding
from overcast.localcloud.faults import ControlMiddleware, Faults
from overcast.localcloud.hollow import spool_dir
from overcast.localcloud.identity import IdentitySigner
from overcast.localcloud.imds import MetadataService
from overcast.localcloud.registries import Registries
from overcast.localcloud.runner import Runner, WakeOnPost

log = logging.getLogger("overcast.localcloud")

ADMIN_POLICY = {"Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def state_file() -> Path:
    return settings.run_dir() / "localcloud.json"


def read_state() -> dict[str, Any] | None:
    """The running local cloud's {"endpoint", "imds", "pid"}, or None if none is running."""
    try:
        state = json.loads(state_file().read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return state


class LocalCloud:
    def __init__(self, port: int = 4599, imds_port: int = 4598, seed: bool = True,
                 enforce_iam: bool = False, write_state: bool = True,
                 poll_interval: float = 0.1, hollow: bool = False) -> None:
        # Hollow: instances run in EC2 but boot nothing; their agents are played (hollow.py).
        self.hollow_spool = spool_dir(settings.run_dir()) if hollow else None
        self._stopped = threading.Event()
        self.faults = Faults()
        handlers = {"spot-interruptions": self._spot_handler, "accounts": self._account_handler}
        self._moto = motoserver.MotoServer(
            port=port, middleware=lambda app: ControlMiddleware(
                WakeOnPost(app, self._wake_runner), self.faults, handlers))
        # moto's state is per process: a new local cloud starts empty, even in a test process
        # that ran one before.
        from moto.core.base_backend import BackendDict

        BackendDict.reset()
        self.endpoint = self._moto.start()
        try:
            self._start(imds_port, seed, enforce_iam, write_state, poll_interval)
        except BaseException:
            self._moto.stop()
            raise

    def _start(self, imds_port: int, seed: bool, enforce_iam: bool,
               write_state: bool, poll_interval: float) -> None:
        motoserver.allow_anonymous_public_reads()
        motofixes.apply()
        motospeed.apply()
        # Its identity-document key lives in the run dir (the control plane is configured
        # with its certificate, OVERCAST_IDENTITY_CERTS), in memory without state files.
        self.signer = IdentitySigner(settings.run_dir() if write_state else None)
        self.imds = MetadataService(port=imds_port, signer=self.signer)
        self.imds_url = self.imds.start()
        # Labels this local cloud's containers: it removes exactly those when it stops.
        self.cloud_id = secrets.token_hex(4)
        self.runner = Runner(self.imds, self.endpoint, interval=poll_interval,
                             cloud_id=self.cloud_id, hollow_spool=self.hollow_spool)
        motoimages.install(self.runner.containers)
        self.timings: dict[str, float] = {}
        self.enforce_iam = enforce_iam
        self._write_state = write_state
        self.registries: Registries | None = None
        try:
            self.registries = Registries(write_state)  # ECR's data plane, Docker Hub's stand-in
            if seed:
                self.timings = seeding.seed(self.endpoint)
                log.info("seeded in %s", {k: round(v, 2) for k, v in self.timings.items()})
                # Creating the other regions' EC2 backends (2.5 s for all) off the startup
                # path makes first calls fast.
                threading.Thread(target=self._warm, daemon=True, name="warm-regions").start()
        except BaseException:
            self.runner.stop()
            self.imds.stop()
            if self.registries is not None:
                self.registries.stop()
            raise
        # Real keys for the operator: under IAM enforcement only IAM-made keys sign requests.
        self.operator_keys = write_operator_keys() if write_state else create_operator_user()
        if enforce_iam:  # after seeding: moto's free requests are used up by then
            motoserver.set_enforce_iam(True)
        self.runner.start()
        if write_state:
            path = state_file()
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"endpoint": self.endpoint, "imds": self.imds_url,
                                       "pid": os.getpid(), "enforce_iam": enforce_iam,
                                       "identity_cert": str(self.signer.cert_path),
                                       "registries": self.registries.state(),
                                       "hollow": self.hollow_spool and str(self.hollow_spool)}))
            tmp.replace(path)

    def _wake_runner(self) -> None:
        runner = getattr(self, "runner", None)  # None while the local cloud is starting
        if runner is not None:
            runner.wake()

    def _warm(self) -> None:
        from moto.ec2.models import ec2_backends

        for region in seeding.SUPPORTED_REGIONS[1:]:  # in-process: IAM enforcement is no matter
            if self._stopped.is_set():
                return
            ec2_backends[motoserver.OPERATOR_ACCOUNT][region].describe_images(owners=["self"])

    def stop(self) -> None:
        """Stop every instance process, then the servers. Safe to call twice."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.runner.stop()
        self.imds.stop()
        if self.registries is not None:
            self.registries.stop()
        self._moto.stop()
        if self.enforce_iam:
            motoserver.set_enforce_iam(False)
        if self._write_state:
            current = read_state()
            if current is None or current.get("pid") == os.getpid():
                state_file().unlink(missing_ok=True)
                operator_keys_file().unlink(missing_ok=True)

    def serve_forever(self) -> None:
        """Block until SIGINT/SIGTERM (or stop()), then shut everything down."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: self._stopped.set())
        try:
            while not self._stopped.wait(0.5):
                pass
        finally:
            self._stopped.clear()
            self.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- simulated AWS events --------------------------------------------------------------
    def interrupt_spot(self, instance_id: str, notice_seconds: float = 0.0) -> dict[str, Any]:
        """What AWS does when it reclaims a spot instance: a notice on the instance's IMDS
        (spot/instance-action), then termination with Server.SpotInstanceTermination."""
        backend = self.runner.backend_of(instance_id)
        inst = backend.get_instance(instance_id)
        if inst.lifecycle != "spot":
            raise ValueError(f"{instance_id} is not a spot instance")
        when = time.gmtime(time.time() + notice_seconds)
        action = {"action": "terminate", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", when)}
        meta = self.imds.instances.get(instance_id)
        if meta is not None:
            meta.spot_action = action

        def reclaim() -> None:
            self.runner.terminate(instance_id, reason="Server.SpotInstanceTermination: "
                                  "Spot instance termination")

        timer = threading.Timer(notice_seconds, reclaim)
        timer.daemon = True
        timer.start()
        return {"instance_id": instance_id, **action}

    def _spot_handler(self, data: dict[str, Any]) -> Any:
        return self.interrupt_spot(data["instance_id"], float(data.get("notice_seconds", 0)))

    def _account_handler(self, data: dict[str, Any]) -> Any:
        return new_aws_account(setup_policy=data.get("setup_policy"),
                               ongoing_policy=data.get("ongoing_policy"),
                               user_name=data.get("user_name", "overcast"),
                               admin_user="admin" if data.get("admin") else None)


def run_local_cloud(port: int = 4599, imds_port: int = 4598, seed: bool = True,
                    **kwargs: Any) -> LocalCloud:
    return LocalCloud(port=port, imds_port=imds_port, seed=seed, **kwargs)


def operator_keys_file() -> Path:
    return settings.run_dir() / "localcloud-operator.json"


def create_operator_user(user_name: str = "overcast-operator") -> dict[str, str]:
    """An admin IAM user in the operator account, with a new access key (in-process)."""
    from moto.iam.models import iam_backends

    iam = iam_backends[motoserver.OPERATOR_ACCOUNT]["aws"]
    if user_name not in iam.users:
        iam.create_user(region_name="us-east-1", user_name=user_name)
        iam.put_user_policy(user_name, "admin", json.dumps(ADMIN_POLICY))
    key = iam.create_access_key(user_name)
    return {"account_id": motoserver.OPERATOR_ACCOUNT, "user": user_name,
            "access_key_id": key.access_key_id, "secret_access_key": key.secret_access_key}


def write_operator_keys() -> dict[str, str]:
    """Create the operator's keys and write them, readable by this user only, where `overcast
    up` and the e2e stack pass them to the control plane as AWS_ACCESS_KEY_ID/SECRET."""
    keys = create_operator_user()
    path = operator_keys_file()
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(keys, f)
    return keys


def read_operator_keys() -> dict[str, str] | None:
    try:
        return json.loads(operator_keys_file().read_text())
    except (OSError, ValueError):
        return None


def _default_policies() -> tuple[dict[str, Any], dict[str, Any]]:
    from overcast.backends import provider_for

    documents = provider_for("aws").policy_documents()
    return documents["setup"], documents["ongoing"]


def new_aws_account(setup_policy: dict[str, Any] | str | None = None,
                    ongoing_policy: dict[str, Any] | str | None = None,
                    user_name: str = "overcast", account_id: str | None = None,
                    admin_user: str | None = None) -> dict[str, str]:
    """A new simulated AWS account (as a user would have): an IAM user with the setup and
    ongoing policies attached and long-lived keys. Runs in-process in the local cloud's
    process, so it works whether or not IAM is enforced. With `admin_user`, also an
    administrator of that account (its keys as admin_access_key_id/admin_secret_access_key),
    to act as the account's owner: detach a policy, or create a role from a "local profile"."""
    from moto.iam.models import iam_backends

    if setup_policy is None or ongoing_policy is None:
        default_setup, default_ongoing = _default_policies()
        setup_policy = setup_policy or default_setup
        ongoing_policy = ongoing_policy or default_ongoing
    if account_id is None:
        taken = set(iam_backends) | {motoserver.OPERATOR_ACCOUNT}
        account_id = next(a for a in (str(random.randint(10**11, 10**12 - 1))
                                      for _ in range(100)) if a not in taken)
    iam = iam_backends[account_id]["aws"]
    iam.create_user(region_name="us-east-1", user_name=user_name)
    for name, doc in (("overcast-setup", setup_policy), ("overcast-ongoing", ongoing_policy)):
        text = doc if isinstance(doc, str) else json.dumps(doc)
        policy = iam.create_policy(description=f"{name} policy", path="/",
                                   policy_document=text, policy_name=name, tags=[])
        iam.attach_user_policy(policy.arn, user_name)
    key = iam.create_access_key(user_name)
    out = {"account_id": account_id, "user": user_name,
           "access_key_id": key.access_key_id, "secret_access_key": key.secret_access_key}
    if admin_user:
        iam.create_user(region_name="us-east-1", user_name=admin_user)
        iam.put_user_policy(admin_user, "admin", json.dumps(ADMIN_POLICY))
        admin_key = iam.create_access_key(admin_user)
        out.update(admin_access_key_id=admin_key.access_key_id,
                   admin_secret_access_key=admin_key.secret_access_key)
    return out
