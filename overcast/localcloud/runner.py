"""The instance runner: boots every running EC2 instance in moto as a container of its AMI.

It polls moto's in-process EC2 backends (all accounts, all regions; a dict walk, so cheap).
An instance whose AMI has a container image (the stock Debian 12 AMI, images made by
CreateImage, such as the overcast image built by `overcast image build`) boots as a container
of that image: containers.py. Instances of any other AMI are not booted (as a VM with no
bootable disk). The runner also owns what every instance shares: loopback addresses, IMDS
entries and the instance profile's credentials.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from overcast.localcloud.containers import ContainerInstances
from overcast.localcloud.hollow import HollowInstances
from overcast.localcloud.imds import InstanceMetadata, MetadataService

log = logging.getLogger("overcast.localcloud.runner")


def _port_free(address: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


class Runner:
    def __init__(self, imds: MetadataService, endpoint: str, interval: float = 0.1,
                 cloud_id: str = "local", hollow_spool: Path | None = None):
        self.imds = imds
        self.endpoint = endpoint
        self.interval = interval
        self.addresses: dict[str, str] = {}  # instance id -> 127.B.x.y, stable across restarts
        # Instances are started by several threads at once: one address each, never shared.
        self._address_lock = threading.Lock()
        self._octet = random.randrange(10, 250)
        self._where: dict[str, tuple[str, str]] = {}  # instance id -> (account, region)
        self._creds: dict[str, tuple[str, dict[str, Any], float]] = {}
        # moto drops an instance's profile association when it is terminated, but the agent
        # still needs credentials for its last log flush: remember the role from boot.
        self._roles: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="runner", daemon=True)
        imds.credentials = self.credentials
        # Hollow mode (`--hollow`): instances run in EC2 but boot nothing (hollow.py).
        self.containers: ContainerInstances | HollowInstances = (
            HollowInstances(self, hollow_spool) if hollow_spool is not None
            else ContainerInstances(self, cloud_id))

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.containers.start()
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and every instance container (local cloud shutdown)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.containers.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # one bad pass must not kill the runner; the next one retries
                log.exception("runner pass failed")
            self._wake.wait(self.interval)
            self._wake.clear()

    def wake(self) -> None:
        """Poll now (a RunInstances or TerminateInstances may have just happened)."""
        self._wake.set()

    # -- one pass ------------------------------------------------------------------------------
    def all_instances(self) -> Iterator[tuple[str, str, Any, Any]]:
        """(account, region, backend, instance) of every instance moto holds."""
        from moto.ec2.models import ec2_backends

        for account in list(ec2_backends):
            for region, backend in list(ec2_backends[account].items()):
                for reservation in list(backend.reservations.values()):
                    for inst in list(reservation.instances):
                        yield account, region, backend, inst

    def poll(self) -> None:
        boxed: list[tuple[str, str, Any, Any]] = []
        for account, region, backend, inst in self.all_instances():
            if self.containers.wants(inst):
                self._where[inst.id] = (account, region)
                boxed.append((account, region, backend, inst))
        self.containers.poll(boxed)

    def forget(self, iid: str) -> None:
        """Drop an instance's IMDS entry and cached credentials (it is gone)."""
        self.imds.unregister(iid)
        self._creds.pop(iid, None)
        self._roles.pop(iid, None)

    def register_instance(self, inst: Any, backend: Any, user_data: str | bytes) -> str:
        """Give an instance its loopback address and IMDS entry; returns the address."""
        with self._address_lock:
            address = self.addresses.get(inst.id) or self._next_address()
            self.addresses[inst.id] = address
        account = self._where.get(inst.id, ("", ""))[0] or getattr(backend, "account_id", "")
        self.imds.register(InstanceMetadata(instance_id=inst.id, user_data=user_data,
                                            local_ipv4=address,
                                            availability_zone=inst.placement.zone,
                                            instance_type=inst.instance_type,
                                            account_id=account, image_id=inst.image_id,
                                            launch_time=_launch_time(inst)))
        self._roles[inst.id] = self._role(inst.id)
        return address

    def instance_shutdown(self, instance_id: str, code: int | None) -> None:
        """The instance powered itself off: stopped or terminated, as its
        InstanceInitiatedShutdownBehavior says (EC2's default: stop)."""
        from moto.ec2.models.instances import StateReason

        backend = self.backend_of(instance_id)
        inst = backend.get_instance(instance_id)
        reason = "Client.InstanceInitiatedShutdown"
        if getattr(inst, "instance_initiated_shutdown_behavior", "stop") == "terminate":
            self.terminate(instance_id, reason=f"{reason}: Instance initiated shutdown")
        else:
            backend.stop_instances([instance_id])
            inst.state_reason = StateReason("Instance initiated shutdown", reason)
        log.info("instance %s powered off (exit code %s): %s", instance_id, code, inst.state)
        self.wake()

    def _next_address(self) -> str:
        """127.B.0.1, ..., 127.B.0.254, 127.B.1.1, ...: the first one not yet given out whose
        scheduler port is free. B is drawn per runner so that local clouds running side by side
        on one machine (tests, benchmarks) do not hand out the same addresses."""
        taken = set(self.addresses.values())
        n = 0
        while True:
            n += 1
            address = f"127.{self._octet}.{(n - 1) // 254}.{(n - 1) % 254 + 1}"
            if address not in taken and _port_free(address, 8786):
                return address

    # -- moto look-ups and termination ---------------------------------------------------
    def backend_of(self, instance_id: str) -> Any:
        """The moto EC2 backend holding an instance; LookupError if there is none."""
        from moto.ec2.models import ec2_backends

        if instance_id not in self._where:
            for account, region, _backend, inst in self.all_instances():
                self._where[inst.id] = (account, region)
        if instance_id not in self._where:
            raise LookupError(f"no instance {instance_id} in the local cloud")
        account, region = self._where[instance_id]
        return ec2_backends[account][region]

    def terminate(self, instance_id: str, reason: str = "") -> None:
        """Terminate in moto (in-process: works whatever IAM enforcement says)."""
        from moto.ec2.models.instances import StateReason

        backend = self.backend_of(instance_id)
        backend.terminate_instances([instance_id])
        if reason:
            code, _, message = reason.partition(": ")
            backend.get_instance(instance_id).state_reason = StateReason(message or code, code)

    # -- credentials for the IMDS ------------------------------------------------------------
    def credentials(self, instance_id: str) -> tuple[str, dict[str, Any]] | None:
        cached = self._creds.get(instance_id)
        if cached and cached[2] - time.time() > 20 * 60:  # botocore refreshes at 15 min left
            return cached[0], cached[1]
        role = self._roles.get(instance_id) or self._role(instance_id)
        if role is None:
            return None
        from moto.sts.models import sts_backends

        account, region = self._where[instance_id]
        with self._lock:
            assumed = sts_backends[account]["aws"].assume_role(
                region_name=region, role_session_name=instance_id, role_arn=role.arn,
                policy=None, duration=3600, external_id=None)
        expires = assumed.expiration.replace(tzinfo=dt.UTC)
        creds = {
            "Code": "Success", "Type": "AWS-HMAC",
            "LastUpdated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "AccessKeyId": assumed.access_key_id, "SecretAccessKey": assumed.secret_access_key,
            "Token": assumed.session_token, "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        self._creds[instance_id] = (role.name, creds, expires.timestamp())
        return role.name, creds

    def _role(self, instance_id: str) -> Any:
        """The instance profile's role. moto associates a profile with only the first instance
        of a multi-instance RunInstances, so fall back to a sibling of the same reservation."""
        backend = self.backend_of(instance_id)
        assoc = backend.iam_instance_profile_associations
        found = assoc.get(instance_id)
        if found is None:
            for reservation in list(backend.reservations.values()):
                ids = [i.id for i in reservation.instances]
                if instance_id in ids:
                    found = next((assoc[i] for i in ids if i in assoc), None)
        if found is None or not found.iam_instance_profile.roles:
            return None
        return found.iam_instance_profile.roles[0]


def _launch_time(inst: Any) -> dt.datetime | None:
    """moto keeps the launch time as an ISO string."""
    raw = getattr(inst, "launch_time", None)
    try:
        return dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00")) if raw else None
    except ValueError:
        return None


class WakeOnPost:
    """WSGI middleware: wake the runner after every POST (EC2's API is all POSTs), so a new
    instance boots without waiting up to a poll interval."""

    def __init__(self, app: Any, wake: Callable[[], None]) -> None:
        self.app, self.wake = app, wake

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        result = self.app(environ, start_response)  # moto's state is updated when it returns
        if environ.get("REQUEST_METHOD") == "POST":
            self.wake()
        return result


__all__ = ["Runner", "WakeOnPost"]
