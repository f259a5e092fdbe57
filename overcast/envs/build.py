"""An environment's image build: the one entry point is `build_environment`.

What a build does, wherever it runs (a builder instance in the account, launched from the
overcast VM image like the image pipeline's builder; never the control plane host):

1. base image: the builder's own root file system (`docker import` of a tar of `/`, i.e. the
   overcast VM image: Debian 12, its python3 and the agent in /opt/overcast), the same on AWS
   and in the local cloud, where no public registry can be pulled from;
2. `docker build` of `dockerfile(...)`: a venv at /opt/env with exactly the lock's packages
   (`pip install --no-deps -r lock.txt`: the lock is complete), plus the agent's `overcast`
   package (copied, without its venv's dask) so the agent's dask runs from the environment;
3. `docker login` to the registry (ECR: the instance role's `GetAuthorizationToken`; Docker
   Hub: the stored access token, passed on the builder's stdin, never in argv or logs) and
   `docker push IMAGE:<lock hash>`; a tag that is already there is not built again.

`build_script(plan)` renders these steps as the shell script the builder runs from its user
data; its output lines `overcast-env-build: <step>` are the progress notifications.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

MARK = "overcast-env-build:"
BASE_TAG = "overcast-env-base:vm"
# Not part of a VM's file system image: kernel views, mounts, caches, the engine's own store.
TAR_EXCLUDES = ("/proc", "/sys", "/dev", "/run", "/tmp", "/var/lib/docker", "/var/cache/apt",
                "/var/lib/containerd", "/mnt", "/media", "/lost+found")


@dataclass(frozen=True)
class BuildPlan:
    lock_hash: str
    lock_text: str
    repository: str  # "<host>/<path>" (ECR repository URI, or docker.io/<namespace/name>)
    registry_kind: str  # "ecr" | "docker_hub"
    registry_server: str  # what `docker login` is given
    region: str | None = None
    username: str | None = None  # Docker Hub's; ECR's is "AWS"

    @property
    def image_uri(self) -> str:
        return f"{self.repository}:{self.lock_hash}"


def dockerfile(base: str = BASE_TAG) -> str:
    return "\n".join([
        f"FROM {base}",
        "COPY lock.txt /opt/env/lock.txt",
        "RUN python3 -m venv /opt/env \\",
        " && /opt/env/bin/pip install --no-cache-dir --no-deps -r /opt/env/lock.txt \\",
        # The agent's package only (not its venv's dask): dask comes from the lock.
        " && cp -r /opt/overcast/venv/lib/python3*/site-packages/overcast \\",
        "    $(/opt/env/bin/python -c 'import sysconfig; print(sysconfig.get_path(\"purelib\"))')",
        "ENV PATH=/opt/env/bin:$PATH",
        "LABEL overcast.lock-hash=" + "{lock_hash}",
        "",
    ])


def build_script(plan: BuildPlan) -> str:
    """The builder's shell script (POSIX sh) for `plan`."""
    q = shlex.quote
    excludes = " ".join(f"--exclude={q(x)}" for x in TAR_EXCLUDES)
    if plan.registry_kind == "ecr":
        login = (f"/opt/overcast/venv/bin/python -m overcast.agent.registry_login "
                 f"{q(plan.region or '')} | docker login "
                 f"--username AWS --password-stdin {q(plan.registry_server)}")
    else:
        login = (f"cat /etc/overcast/registry-token | docker login --username "
                 f"{q(plan.username or '')} --password-stdin {q(plan.registry_server)}")
    return "\n".join([
        "#!/bin/sh", "set -eu", f'say() {{ echo "{MARK} $*"; }}',
        "export DOCKER_CLI_EXPERIMENTAL=enabled  # for `docker manifest inspect` (20.10)",
        "WORK=$(mktemp -d)", "cd \"$WORK\"",
        "say login", login,
        f"if docker manifest inspect {q(plan.image_uri)} >/dev/null 2>&1; then",
        f"  say reused {q(plan.image_uri)}; exit 0", "fi",
        "say base",
        f"tar -C / {excludes} -cf - . | docker import - {q(BASE_TAG)}",
        "cat > lock.txt <<'OVERCAST_LOCK'", plan.lock_text.rstrip("\n"), "OVERCAST_LOCK",
        "cat > Dockerfile <<'OVERCAST_DOCKERFILE'",
        dockerfile().replace("{lock_hash}", plan.lock_hash).rstrip("\n"),
        "OVERCAST_DOCKERFILE",
        "say build", f"docker build --network host -t {q(plan.image_uri)} .",
        "say push", f"docker push {q(plan.image_uri)}",
        f"say done {q(plan.image_uri)}", "",
    ])


def build_environment(plan: BuildPlan) -> str:
    """Build and push the image of `plan` on a builder instance; returns the image URI.

    NOT WIRED YET: launching the builder depends on the VM image pipeline (`overcast image
    build`, branch `images`) and on instances with a container engine (branch `lcloud`).
    The step that remains: the reconciler launches a builder from the account's overcast VM
    image with `build_script(plan)` as its user data (like the image pipeline's builder),
    follows its console lines (`MARK ...`) as notifications, and records `plan.image_uri`
    on every environment row with `plan.lock_hash` when it reports `done`.
    """
    raise NotImplementedError(
        "Environment image builds run on a builder instance launched from the overcast VM "
        "image; that pipeline is not in this version yet (see docs/software-environments.md).")
