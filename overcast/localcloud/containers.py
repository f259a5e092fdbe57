"""EC2 instances as containers of their AMI's image (the local cloud's real boot path).

Every AMI that has a container image (the stock Debian 12 AMI, and every image CreateImage
made from a container instance) boots as a container:

- `--network host`: the instance binds its own 127.B.x.y address (its IMDS local-ipv4) and
  reaches the IMDS, the local cloud's AWS endpoint (AWS_ENDPOINT_URL) and the control plane on
  loopback. No bridge, no private-range address.
- PID 1 is instance_init.py (mounted read-only, alone: the local cloud's cloud-init stand-in),
  run by the image's own python3; it runs the user data and prints to the console.
- The egress a VPC would give: the machine's CA bundle mounted read-only over the image's,
  the machine's pip settings (files read-only, PIP_*/UV_* variables that name no host path).
- Host files are bind mounts (HostConfig.Mounts), never docker-py's `volumes=`: that declares
  each target a VOLUME, which CreateImage (docker commit) bakes into the AMI, and an instance
  of it not mounting that file fails to be created ("cannot mount volume over existing file").
- Labels: overcast.localcloud=<this local cloud's id>, overcast.instance=<instance id>; the
  local cloud removes every container with its label when it stops.

State follows EC2: terminate removes the container (SIGTERM, GRACE, SIGKILL); stop keeps
it (an EBS root volume survives a stop) and start starts it again; the container ending on its
own (`poweroff` inside) is an instance-initiated shutdown: stopped or terminated as the
instance's InstanceInitiatedShutdownBehavior says (EC2's default is stop).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import docker.errors
import requests.exceptions

from overcast import settings
from overcast.localcloud import engineproxy, stockimage
from overcast.localcloud.egress import INIT_IN_CONTAINER, bind_mounts, egress_env, egress_mounts

log = logging.getLogger("overcast.localcloud.containers")

LABEL_CLOUD = "overcast.localcloud"
LABEL_INSTANCE = "overcast.instance"
LABEL_PID = "overcast.localcloud.pid"  # the local cloud's process: orphans are found by it
CONSOLE_LIMIT = 64 * 1024  # EC2 returns the last 64 KB of console output
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IMAGE_WAIT = 900.0  # a first boot may wait for the stock image build
# Seconds between SIGTERM and SIGKILL (whole seconds only): longer than the instance init's own
# SHUTDOWN_GRACE, so a VM's services stop cleanly (the agent ships its last logs) before the
# engine kills what is left. Instances whose processes exit at once end at once.
GRACE = 25
# What the engine's client raises: the engine said no, or it is not there (any more).
ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)


@dataclass
class Box:
    """One instance's container, as the local cloud tracks it."""
    instance_id: str
    account: str
    region: str
    state: str = "booting"  # booting | running | shutting-down | stopped | gone
    container: Any = None
    started: float = field(default_factory=time.monotonic)
    running_at: float | None = None  # when the container started (boot latency)


class ContainerInstances:
    def __init__(self, runner: Any, cloud_id: str) -> None:
        self.runner = runner
        self.cloud_id = cloud_id
        self.images: dict[str, str] = {stockimage.ami_id(): stockimage.image_tag()}
        self.pending_images: set[str] = set()
        self.boxes: dict[str, Box] = {}
        self.consoles: dict[str, bytes] = {}
        self.client: Any = None
        self.error: str | None = None
        self.ready = threading.Event()
        self.timings: dict[str, float] = {}
        self.boot_latency: dict[str, float] = {}
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="containers")
        self._lock = threading.Lock()
        self._closed = False
        self.engine_proxy: engineproxy.EngineProxy | None = None
        self._runtime: dict[str, bool] = {}  # image -> has a container runtime (docker)

    # -- the engine and the stock image ----------------------------------------------------
    def start(self) -> None:
        threading.Thread(target=self._prepare, name="container-engine", daemon=True).start()

    def _prepare(self) -> None:
        from overcast.localcloud import engine

        try:
            t = time.monotonic()
            self.client = engine.connect()
            self.timings["engine"] = time.monotonic() - t
            sock = engineproxy.engine_socket()
            if sock and os.path.exists(sock):
                self.engine_proxy = engineproxy.EngineProxy(sock)
            self._remove_orphans()
            t = time.monotonic()
            tag, built = stockimage.ensure(self.client)
            self.timings["stock_image"] = time.monotonic() - t
            self.timings["stock_image_built"] = built
            log.info("container engine ready; stock image %s (%.1f s)", tag,
                     self.timings["stock_image"])
        except Exception as exc:  # noqa: BLE001 (no engine/image: say why instances cannot boot)
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("instances of container images cannot boot: %s", self.error)
        finally:
            self.ready.set()

    def _remove_orphans(self) -> None:
        """Containers of local clouds that died without stopping them (SIGKILL, crash)."""
        for entry in self.client.api.containers(all=True, filters={"label": LABEL_PID}):
            try:
                os.kill(int(entry["Labels"][LABEL_PID]), 0)
                continue  # its local cloud is alive (or the pid was reused: leave it)
            except ProcessLookupError:
                pass
            except (PermissionError, ValueError):
                continue
            log.info("removing %s, left by a local cloud that is gone", entry["Names"])
            with contextlib.suppress(*ENGINE_ERRORS):
                self.client.api.remove_container(entry["Id"], force=True)

    def wants(self, inst: Any) -> bool:
        return inst.image_id in self.images or inst.image_id in self.pending_images

    # -- one runner pass -------------------------------------------------------------------
    def poll(self, found: list[tuple[str, str, Any, Any]]) -> None:
        """Bring containers in line with moto's instances (those `wants` said yes to)."""
        seen = set()
        for account, region, backend, inst in found:
            seen.add(inst.id)
            box = self.boxes.get(inst.id)
            if inst.state == "running" and (box is None or box.state in ("stopped", "gone")):
                if box is None:
                    box = self.boxes[inst.id] = Box(inst.id, account, region)
                box.state, box.started = "booting", time.monotonic()
                self._pool.submit(self._boot, box, backend, inst)
            elif inst.state in ("stopping", "stopped") and box and box.state == "running":
                box.state = "stopped"
                self._pool.submit(self._stop, box, False)
            elif inst.state in ("shutting-down", "terminated") and box and box.state != "gone":
                box.state = "gone"
                self._pool.submit(self._stop, box, True)
        for iid, box in list(self.boxes.items()):
            if iid not in seen and box.state != "gone":  # moto reset: the instance is gone
                box.state = "gone"
                self._pool.submit(self._stop, box, True)

    # -- boot ------------------------------------------------------------------------------
    def _boot(self, box: Box, backend: Any, inst: Any) -> None:
        try:
            if box.container is not None:  # StartInstances after a stop: same disk
                self.runner.register_instance(inst, backend, self._user_data(inst))
                box.container.start()
            else:
                image = self._image_for(inst.image_id)
                self.runner.register_instance(inst, backend, self._user_data(inst))
                box.container = self._run(inst, image)
        except Exception as exc:  # noqa: BLE001 (whatever failed, the instance must not hang)
            log.error("instance %s cannot boot: %s", inst.id, exc)
            box.state = "gone"
            self.runner.forget(inst.id)
            self.runner.terminate(inst.id, reason=f"Server.InternalError: {exc}")
            return
        box.running_at = time.monotonic()
        self.boot_latency[inst.id] = box.running_at - box.started
        if box.state == "booting":
            box.state = "running"
        threading.Thread(target=self._watch, args=(box, box.container), daemon=True,
                         name=f"watch-{inst.id}").start()
        log.info("instance %s booted as container %s", inst.id, box.container.short_id)

    def _image_for(self, ami_id: str) -> str:
        deadline = time.monotonic() + IMAGE_WAIT
        # An AMI CreateImage is still committing, or the stock image still building.
        while (ami_id in self.pending_images or not self.ready.is_set()) and (
                time.monotonic() < deadline):
            if self._closed:
                raise RuntimeError("the local cloud is stopping")
            time.sleep(0.1)
        if self.client is None:
            raise RuntimeError(f"no container engine ({self.error or 'not ready'})")
        if ami_id not in self.images:
            raise RuntimeError(f"the image of {ami_id} is not available")
        return self.images[ami_id]

    @staticmethod
    def _user_data(inst: Any) -> bytes:
        return base64.b64decode(inst.user_data.as_bytes()) if inst.user_data else b""

    def _run(self, inst: Any, image: str) -> Any:
        env = {**egress_env(), "PATH": PATH,
               "AWS_EC2_METADATA_SERVICE_ENDPOINT": self.runner.imds.endpoint_for(inst.id),
               "AWS_ENDPOINT_URL": self.runner.endpoint}
        labels = {LABEL_CLOUD: self.cloud_id, LABEL_PID: str(os.getpid())}
        mounts = egress_mounts()
        if self.engine_proxy is not None and self._has_runtime(image):
            # A VM of an image with a container runtime has an engine of its own: here, a
            # socket of its own to the machine's engine (engineproxy.py).
            sock = self.engine_proxy.open(inst.id, labels)
            mounts[str(sock)] = {"bind": engineproxy.IN_CONTAINER, "mode": "rw"}
        return self.client.containers.run(
            image, [INIT_IN_CONTAINER], entrypoint=["python3", "-u"], detach=True,
            network_mode="host", environment=env, mounts=bind_mounts(mounts),
            labels={**labels, LABEL_INSTANCE: inst.id, "overcast.ami": inst.image_id},
            name=f"overcast-{self.cloud_id}-{inst.id}", stop_signal="SIGTERM")

    def _has_runtime(self, image: str) -> bool:
        """Whether the image has the docker client (a VM image with a container runtime);
        looked at once per image, by running `test -x` in it."""
        if image not in self._runtime:
            try:
                self.client.containers.run(
                    image, ["-c", "test -x /usr/bin/docker"], entrypoint=["/bin/sh"],
                    remove=True, network_mode="none",
                    labels={LABEL_CLOUD: self.cloud_id, LABEL_PID: str(os.getpid())})
                self._runtime[image] = True
            except docker.errors.ContainerError:
                self._runtime[image] = False
            except ENGINE_ERRORS as exc:  # not known: boot it without an engine
                log.warning("cannot tell whether %s has a container runtime: %s", image, exc)
                return False
        return self._runtime[image]

    def _remove_siblings(self, instance_id: str) -> None:
        """The containers an instance ran on its engine end with it, as on a VM."""
        if self.engine_proxy is None or self.client is None:
            return
        with contextlib.suppress(*ENGINE_ERRORS):
            for c in self.client.containers.list(
                    all=True, sparse=True,
                    filters={"label": f"{engineproxy.LABEL_HOST}={instance_id}"}):
                _remove(c)

    # -- exits, stop, terminate ------------------------------------------------------------
    def _watch(self, box: Box, container: Any) -> None:
        """Wait for the container to end; if nobody asked it to, the instance shut down."""
        try:
            code = container.wait().get("StatusCode")
        except ENGINE_ERRORS:  # removed under us (terminate, local cloud stop)
            return
        self._save_console(box)
        self._remove_siblings(box.instance_id)
        if box.state != "running" or self._closed:
            return  # a stop/terminate the local cloud asked for
        box.state = "shutting-down"  # neither booted again nor stopped by a pass meanwhile
        self.runner.instance_shutdown(box.instance_id, code)
        if box.state == "shutting-down":  # not "gone": a pass saw it terminated already
            box.state = "stopped"

    def _stop(self, box: Box, remove: bool) -> None:
        container = box.container
        if container is not None:
            try:
                container.stop(timeout=GRACE)
                self._save_console(box)
                if remove:
                    container.remove(force=True)
                    box.container = None
            except ENGINE_ERRORS as exc:  # already gone
                log.debug("container of %s: %s", box.instance_id, exc)
        self._remove_siblings(box.instance_id)
        if remove:
            if self.engine_proxy is not None:
                self.engine_proxy.close(box.instance_id)
            self.runner.forget(box.instance_id)

    def _save_console(self, box: Box) -> None:
        try:
            out = box.container.logs(stdout=True, stderr=True)
        except ENGINE_ERRORS:
            return
        self.consoles[box.instance_id] = out[-CONSOLE_LIMIT:]
        path = settings.logs_dir() / "instances" / f"{box.instance_id}.console.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(out)

    def console(self, instance_id: str) -> bytes | None:
        """What the instance printed: live from the engine, or saved when it ended."""
        box = self.boxes.get(instance_id)
        if box is not None and box.container is not None:
            with contextlib.suppress(*ENGINE_ERRORS):  # removed just now: the saved copy
                return box.container.logs(stdout=True, stderr=True)[-CONSOLE_LIMIT:]
        if instance_id in self.consoles:
            return self.consoles[instance_id]
        # A legacy process instance (runner.py): its output file is its console.
        legacy = settings.logs_dir() / "instances" / f"{instance_id}.log"
        with contextlib.suppress(OSError):
            return legacy.read_bytes()[-CONSOLE_LIMIT:]
        # Ours, but its container never ran (could not be created): no output, as on EC2.
        return b"" if box is not None else None

    # -- CreateImage / DeregisterImage -------------------------------------------------------
    def can_commit(self, instance_id: str) -> bool:
        box = self.boxes.get(instance_id)
        return box is not None and box.container is not None

    def commit(self, instance_id: str, ami: Any) -> None:
        """docker commit the instance's container as `ami`'s image: pending -> available."""
        self.pending_images.add(ami.id)
        ami.state = "pending"
        self._pool.submit(self._commit, self.boxes[instance_id], ami)

    def _commit(self, box: Box, ami: Any) -> None:
        try:
            image = box.container.commit(
                repository="overcast-localcloud/ami", tag=ami.id,
                changes=[f"LABEL {LABEL_CLOUD}={self.cloud_id}"])
            self.images[ami.id] = image.id
            ami.state = "available"
        except ENGINE_ERRORS as exc:
            log.error("CreateImage %s of %s failed: %s", ami.id, box.instance_id, exc)
            ami.state = "failed"
        finally:
            self.pending_images.discard(ami.id)

    def forget_image(self, ami_id: str) -> None:
        image = self.images.pop(ami_id, None)
        if image is None or ami_id == stockimage.ami_id() or self.client is None:
            return
        try:
            self.client.images.remove(image)
        except ENGINE_ERRORS as exc:  # still used by an instance: removed when the cloud stops
            log.debug("image of %s kept for now: %s", ami_id, exc)

    # -- local cloud shutdown ----------------------------------------------------------------
    def stop(self) -> None:
        """Remove every container and committed image of this local cloud, by label."""
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.client is None:
            return
        label = f"{LABEL_CLOUD}={self.cloud_id}"
        # sparse: no inspect per container (one may go between the list and its inspect)
        containers = self.client.containers.list(all=True, filters={"label": label},
                                                 sparse=True)
        threads = [threading.Thread(target=_remove, args=(c,)) for c in containers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for image in self.client.images.list(filters={"label": label}):
            try:
                self.client.images.remove(image.id, force=True)
            except ENGINE_ERRORS as exc:
                log.warning("cannot remove image %s: %s", image.id, exc)
        if self.engine_proxy is not None:  # what instances built, imported or pulled
            for name in self.engine_proxy.images():
                with contextlib.suppress(*ENGINE_ERRORS):
                    self.client.images.remove(name, force=True)
            self.engine_proxy.stop()
        self.client.close()


def _remove(container: Any) -> None:
    try:
        container.stop(timeout=GRACE)
        container.remove(force=True)
    except ENGINE_ERRORS as exc:
        log.warning("cannot remove container %s: %s", container.id, exc)
