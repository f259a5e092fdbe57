"""The instance runner: boots every running EC2 instance in moto, as a container or a process.

It polls moto's in-process EC2 backends (all accounts, all regions; a dict walk, so cheap).
An instance whose AMI has a container image (the stock Debian 12 AMI, images made by
CreateImage) boots as a container of that image: containers.py. An instance tagged
overcast:managed=true of the legacy seeded overcast-agent AMI boots as a local process of the
agent (legacy path, until the VM image pipeline replaces it): a new running instance gets a
loopback address, an IMDS entry and its agent process; a terminated/stopped one loses its
process; a process that exits on its own terminates its instance, as a VM that shuts down would.

Starting and stopping the processes is launcher.py's job; its names are re-exported here.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from overcast import settings, tags
from overcast.localcloud.containers import ContainerInstances
from overcast.localcloud.imds import InstanceMetadata, MetadataService
from overcast.localcloud.launcher import (
    STOP_GRACE,
    Booted,
    ForkServerLauncher,
    Launcher,
    default_launcher,
    stop_process,
)

log = logging.getLogger("overcast.localcloud.runner")

DEFAULT_COMMAND: tuple[str, ...] = (sys.executable, "-m", "overcast.agent")
STRIP_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
             "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SHARED_CREDENTIALS_FILE",
             "AWS_CONFIG_FILE", "MOTO_AMIS_PATH", "MOTO_ACCOUNT_ID")


def _port_free(address: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def _host_gpus() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], check=False, capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


class Runner:
    def __init__(self, imds: MetadataService, endpoint: str,
                 command: Sequence[str] = DEFAULT_COMMAND, interval: float = 0.1,
                 launcher: Launcher | None = None, extra_env: dict[str, str] | None = None,
                 cloud_id: str = "local"):
        self.imds = imds
        self.endpoint = endpoint
        self.command = list(command)
        self.interval = interval
        self.extra_env = extra_env or {}
        # Started now, so it is warm (imports done) by the time the first instance runs.
        self.launcher = launcher or default_launcher(self._base_env())
        self.booted: dict[str, Booted] = {}
        self._stopping: dict[str, Booted] = {}  # terminated, still in their grace period
        self.addresses: dict[str, str] = {}  # instance id -> 127.B.x.y, stable across restarts
        self._octet = random.randrange(10, 250)
        self.exit_codes: dict[str, int] = {}
        self._where: dict[str, tuple[str, str]] = {}  # instance id -> (account, region)
        self._creds: dict[str, tuple[str, dict[str, Any], float]] = {}
        # moto drops an instance's profile association when it is terminated, but the agent
        # still needs credentials for its last log flush: remember the role from boot.
        self._roles: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="runner", daemon=True)
        self._host_gpus: int | None = None
        imds.credentials = self.credentials
        self.containers = ContainerInstances(self, cloud_id)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.containers.start()
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and every instance process (local cloud shutdown)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        # Include instances whose shutdown was still in its grace period.
        every = {**self._stopping, **self.booted}
        stoppers = [threading.Thread(target=stop_process, args=(b,)) for b in every.values()]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
        self.booted.clear()
        self._stopping.clear()
        self.launcher.close()
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

    def instances(self) -> Iterator[tuple[str, str, Any, Any]]:
        """(account, region, backend, instance) of every overcast instance moto holds."""
        for account, region, backend, inst in self.all_instances():
            if backend.tags.get(inst.id, {}).get(tags.MANAGED) == "true":
                yield account, region, backend, inst

    def poll(self) -> None:
        seen: dict[str, str] = {}
        boxed: list[tuple[str, str, Any, Any]] = []
        for account, region, backend, inst in self.all_instances():
            if self.containers.wants(inst):
                self._where[inst.id] = (account, region)
                boxed.append((account, region, backend, inst))
                continue
            if backend.tags.get(inst.id, {}).get(tags.MANAGED) != "true":
                continue
            seen[inst.id] = inst.state
            self._where[inst.id] = (account, region)
            if inst.state == "running" and inst.id not in self.booted:
                self._boot(account, region, backend, inst)
        self.containers.poll(boxed)
        for iid, stopping in list(self._stopping.items()):
            if stopping.proc.poll() is not None:
                del self._stopping[iid]
                self.imds.unregister(iid)
                self._creds.pop(iid, None)
                self._roles.pop(iid, None)
        for iid, booted in list(self.booted.items()):
            state = seen.get(iid)
            if state != "running":  # terminated, stopped, stopping or gone (moto reset)
                log.info("instance %s is %s: stopping its process", iid, state or "gone")
                # The IMDS (credentials) stays up while the process shuts down, as on a VM:
                # the agent's last log flush to CloudWatch needs them.
                self.booted.pop(iid, None)
                self._stopping[iid] = booted
                threading.Thread(target=stop_process, args=(booted,), daemon=True).start()
            elif booted.proc.poll() is not None:
                code = booted.proc.returncode
                self.exit_codes[iid] = code
                log.info("instance %s: agent exited with code %s; terminating the instance",
                         iid, code)
                self._forget(iid)
                booted.log_file.close()
                self.terminate(iid, reason=f"Client.InstanceInitiatedShutdown: exit code {code}")

    def _forget(self, iid: str) -> None:
        self.booted.pop(iid, None)
        self.forget(iid)

    def forget(self, iid: str) -> None:
        """Drop an instance's IMDS entry and cached credentials (it is gone)."""
        self.imds.unregister(iid)
        self._creds.pop(iid, None)
        self._roles.pop(iid, None)

    def register_instance(self, inst: Any, backend: Any, user_data: str | bytes) -> str:
        """Give an instance its loopback address and IMDS entry; returns the address."""
        address = self.addresses.get(inst.id) or self._next_address()
        self.addresses[inst.id] = address
        self.imds.register(InstanceMetadata(instance_id=inst.id, user_data=user_data,
                                            local_ipv4=address,
                                            availability_zone=inst.placement.zone,
                                            instance_type=inst.instance_type))
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

    def _boot(self, account: str, region: str, backend: Any, inst: Any) -> None:
        user_data = inst.user_data.decode() if inst.user_data else ""  # base64 inside moto
        address = self.register_instance(inst, backend, user_data)
        env = self._base_env()
        env.update({
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": self.imds.endpoint_for(inst.id),
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": region,
            "OVERCAST_INSTANCE_ID": inst.id,
        })
        gpus = self._gpus(backend, inst.instance_type)
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(gpus))
        path = settings.logs_dir() / "instances" / f"{inst.id}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(path, "ab")  # noqa: SIM115 (owned by Booted, closed on stop)
        try:
            proc = self.launcher.launch(self.command, env, log_file)
        except OSError as exc:
            log_file.close()
            log.error("instance %s: cannot start agent: %s", inst.id, exc)
            self.terminate(inst.id, reason=f"Client.InstanceInitiatedShutdown: {exc}")
            return
        self.booted[inst.id] = Booted(inst.id, account, region, address, proc, log_file,
                                      time.monotonic())
        log.info("instance %s (%s, %s) booted at %s, pid %s", inst.id, account, region,
                 address, proc.pid)

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in STRIP_ENV}
        env.update(self.extra_env)
        return env

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

    def _gpus(self, backend: Any, instance_type: str) -> int | None:
        """GPUs to expose, or None to leave CUDA_VISIBLE_DEVICES alone (no host GPUs)."""
        if self._host_gpus is None:
            self._host_gpus = _host_gpus()
        if not self._host_gpus:
            return None
        try:
            info = backend.describe_instance_types(instance_types=[instance_type])[0]
            wanted = sum(g.get("Count", 0) for g in (info.get("GpuInfo") or {}).get("Gpus", []))
        except (LookupError, AttributeError, ValueError):  # unknown type: treat as no GPU
            wanted = 0
        return min(wanted, self._host_gpus)  # 0 -> "" hides host GPUs from CPU instances

    # -- moto look-ups and termination ---------------------------------------------------
    def backend_of(self, instance_id: str) -> Any:
        """The moto EC2 backend holding an instance; LookupError if there is none."""
        from moto.ec2.models import ec2_backends

        if instance_id not in self._where:
            for account, region, _backend, inst in self.instances():
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


def instance_log(instance_id: str) -> Path:
    return settings.logs_dir() / "instances" / f"{instance_id}.log"


__all__ = [
    "DEFAULT_COMMAND",
    "STOP_GRACE",
    "Booted",
    "ForkServerLauncher",
    "Launcher",
    "Runner",
    "WakeOnPost",
    "default_launcher",
    "instance_log",
]
