"""Run the agent (and so dask) inside the cluster's software environment image.

On a VM whose boot document names `software_image`, the agent started by the service logs in
to the registry (ECR: the instance role's GetAuthorizationToken; Docker Hub: the token from
the boot document, on stdin), pulls the image and replaces itself with
`docker run --network host IMAGE python -m overcast.agent`: the agent inside reads the same
boot document from the IMDS user data, and runs dask from the image's /opt/env. The container's
exit code is the agent's, so the service's watchdog (power off) works unchanged; SIGTERM is
passed on to the container by the docker client.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import time

from overcast.agent.control import ControlPlane
from overcast.agent.imds import InstanceIdentity
from overcast.bootconfig import BootConfig

logger = logging.getLogger("overcast.agent")
INSIDE = "OVERCAST_IN_ENVIRONMENT"  # set in the container: the agent there runs dask itself
ENV_PYTHON = "/opt/env/bin/python"
PASS_ENV = ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_ENDPOINT_URL")
PULL_TRIES = 3


class EnvironmentError_(RuntimeError):
    """The image could not be pulled or run; the message says why (never a secret)."""


def wanted(boot: BootConfig) -> bool:
    return bool(boot.software_image) and not os.environ.get(INSIDE)


def _docker(args: list[str], stdin: str | None = None, timeout: float = 1800) -> str:
    done = subprocess.run(["docker", *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise EnvironmentError_(f"docker {args[0]} failed: {tail[:300]}")
    return done.stdout


def login(boot: BootConfig) -> None:
    reg = boot.registry or {}
    if reg.get("kind") == "ecr":
        from overcast.agent.registry_login import ecr_login

        user, password, _ = ecr_login(reg.get("region") or boot.region)
    elif reg.get("kind") == "docker_hub":
        user, password = reg.get("username") or "", reg.get("token") or ""
    else:
        return  # a public image: no login
    _docker(["login", "--username", user, "--password-stdin", reg["server"]], stdin=password,
            timeout=120)


def pull(image: str) -> None:
    for attempt in range(1, PULL_TRIES + 1):
        try:
            _docker(["pull", "--quiet", image])
            return
        except EnvironmentError_:
            if attempt == PULL_TRIES:
                raise
            time.sleep(2 * attempt)


def run_command(boot: BootConfig, ident: InstanceIdentity) -> list[str]:
    cmd = ["docker", "run", "--rm", "--network", "host",
           "--name", f"overcast-env-{ident.instance_id}", "-e", f"{INSIDE}=1"]
    for name in PASS_ENV:  # by name: docker takes the value from this process's environment
        if os.environ.get(name):
            cmd += ["-e", name]
    if boot.worker_resources.get("GPU"):
        cmd += ["--gpus", "all"]  # the NVIDIA runtime of the GPU image (docs/software-...)
    return [*cmd, "--entrypoint", ENV_PYTHON, boot.software_image, "-m", "overcast.agent"]


def run_in_image(boot: BootConfig, ident: InstanceIdentity) -> int:
    """Log in, pull, then exec the container (does not return unless it fails first)."""
    image = boot.software_image or ""
    try:
        if shutil.which("docker") is None:
            raise EnvironmentError_("this VM has no container runtime (docker): the VM image "
                                    "was built without one; rebuild it (`overcast image build`)")
        logger.info("software environment: logging in to %s", (boot.registry or {}).get("server"))
        login(boot)
        started = time.monotonic()
        pull(image)
        logger.info("pulled %s in %.1f s; starting the agent inside it", image,
                    time.monotonic() - started)
    except (EnvironmentError_, subprocess.TimeoutExpired, OSError) as exc:
        reason = f"cannot run the software environment {image}: {exc}"
        logger.error("%s", reason)
        asyncio.run(_report(boot, ident.instance_id, reason))
        return 1
    cmd = run_command(boot, ident)
    os.execvp(cmd[0], cmd)
    return 1  # not reached


async def _report(boot: BootConfig, instance_id: str, reason: str) -> None:
    control = ControlPlane(boot, instance_id)
    try:
        await control.failed(reason[:300])
    except Exception as exc:  # noqa: BLE001 - best effort: the VM powers off anyway
        logger.warning("could not report the failure to the control plane: %s", exc)
    finally:
        await control.aclose()
