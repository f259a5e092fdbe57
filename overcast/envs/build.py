"""An environment's image build on a builder instance: the script, its user data, its progress.

What a build does, wherever it runs (a builder instance in the account, launched from the
overcast VM image like the image pipeline's builder; never the control plane host):

1. `docker login` to the registry (ECR: the instance role's `GetAuthorizationToken`; Docker
   Hub: the stored access token from a root-only file, on stdin; never in argv or logs);
2. wheels: `pip download --no-deps` of the lock into the VM's pip cache (the VPC's package
   mirror in the local cloud: a warm build downloads nothing), served to the build over HTTP
   on the builder's own address (`docker build`'s RUN steps get no mounts);
3. base image: the builder's own root file system (`docker import` of a tar of `/`, i.e. the
   overcast VM image: Debian 12, its python3 and the agent in /opt/overcast), the same on AWS
   and in the local cloud, where no public registry can be pulled from;
4. `docker build` of `dockerfile(...)`: a venv at /opt/env with exactly the lock's packages
   (`pip install --no-deps --no-index`: the lock is complete); the agent's venv is appended to
   its `sys.path` (a .pth file), so the agent finds its own helpers (httpx, boto3, ...) while
   every package the lock names, dask and distributed included, comes from /opt/env;
5. `docker push IMAGE:<lock hash>`.

Progress lines `overcast-env-build: <step>` on the console are what the control plane follows
(`progress`); `overcast-env-build: done IMAGE` ends a build, `FAILED ...` fails it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

MARK = "overcast-env-build:"
TOKEN_FILE = "/etc/overcast/registry-token"
SCRIPT = "/opt/overcast/env-build.sh"
AGENT_PYTHON = "/opt/overcast/venv/bin/python"
WHEELS = "/root/.cache/pip/overcast-env-wheels"
# Not part of a VM's file system image: kernel views, mounts, caches, the engine's own store,
# cloud-init's copy of this builder's user data, registry logins and the registry token.
TAR_EXCLUDES = ("./proc", "./sys", "./dev", "./run", "./tmp", "./var/lib/docker",
                "./var/cache/apt", "./var/lib/containerd", "./mnt", "./media", "./lost+found",
                "./var/lib/cloud", "./root/.cache", "./root/.docker", "." + TOKEN_FILE,
                "./etc/overcast/boot.json", "./usr/lib/overcast-localcloud", "./var/tmp",
                # The container engine (~200 MB) runs on the VM, not in the environment.
                "./usr/bin/docker", "./usr/bin/dockerd", "./usr/sbin/dockerd",
                "./usr/bin/containerd", "./usr/bin/containerd-shim", "./usr/sbin/runc",
                "./usr/bin/containerd-shim-runc-v1", "./usr/bin/containerd-shim-runc-v2",
                "./usr/bin/runc", "./usr/bin/ctr", "./usr/bin/docker-proxy")
# Serves the wheel directory on this VM's own address (what `docker build --network host`
# reaches) and prints the port.
_SERVE = ("import functools, http.server, sys\n"
          "h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])\n"
          "s = http.server.ThreadingHTTPServer((sys.argv[1], 0), h)\n"
          "print(s.server_address[1], flush=True)\n"
          "s.serve_forever()\n")
_ADDRESS = ("from overcast.agent.imds import IMDSClient; "
            "print(IMDSClient().identity().local_ipv4)")


@dataclass(frozen=True)
class BuildPlan:
    lock_hash: str
    lock_text: str
    repository: str  # "<host>/<path>" (ECR repository URI, or <hub host>/<namespace/name>)
    registry_kind: str  # "ecr" | "docker_hub"
    registry_server: str  # what `docker login` is given
    region: str | None = None
    username: str | None = None  # Docker Hub's; ECR's is "AWS"

    @property
    def image_uri(self) -> str:
        return f"{self.repository}:{self.lock_hash}"

    @property
    def base_tag(self) -> str:
        return f"overcast-env-base:{self.lock_hash[:16]}"


# pip from Debian's pip wheel (python3-venv brings it) when there is one: no ensurepip.
PIP = ('PIPWHL=$(ls /usr/share/python-wheels/pip-*.whl 2>/dev/null | head -n 1); '
       'pip() { if [ -n "$PIPWHL" ]; then "$PY" "$PIPWHL/pip" "$@"; else "$PY" -m pip "$@"; fi; }')


# Byte code compiled into the image for the packages every VM of the environment imports as it
# boots (the agent, dask's scheduler/worker and dashboard) and the data stack its first tasks
# use. pip's --no-compile spares compiling the whole lock (a build the user waits for); without
# this, each VM compiled about a thousand modules at every boot (a scheduler in a package-sync
# image: 1,039 .pyc written, numpy, distributed, bokeh, botocore ...). Test suites left out.
BYTECODE_PACKAGES = (
    "distributed", "dask", "bokeh", "tornado", "numpy", "pandas", "pyarrow", "cloudpickle",
    "msgpack", "psutil", "toolz", "tlz", "zict", "tblib", "sortedcontainers", "partd", "locket",
    "fsspec", "s3fs", "aiobotocore", "aiohttp", "botocore", "boto3", "s3transfer", "urllib3",
    "dateutil", "yaml", "jinja2", "markupsafe", "click", "packaging", "importlib_metadata",
    "zipp", "cryptography", "httpx", "httpcore", "h11", "anyio", "sniffio", "idna", "certifi",
    "rich", "pygments", "markdown_it")


def _compile_step(purelib: str) -> list[str]:
    """Shell lines (continuing a RUN) compiling BYTECODE_PACKAGES the lock installed; a module
    that does not compile is left to compile on import, as before."""
    return [f" && {{ SP={purelib}; set --; for p in {' '.join(BYTECODE_PACKAGES)}; do \\",
            '    if [ -d "$SP/$p" ]; then set -- "$@" "$SP/$p"; fi; done; \\',
            "    [ $# -eq 0 ] || /opt/env/bin/python -m compileall -q -j 0 -x '/tests?/' \\",
            '    "$@" > /dev/null || true; } \\']


def dockerfile(base: str, wheels_url: str = "$WHEELS_URL") -> str:
    purelib = "$(/opt/env/bin/python -c 'import sysconfig; print(sysconfig.get_path(\"purelib\"))')"
    return "\n".join([
        f"FROM {base}",
        "ARG WHEELS_URL",
        "COPY lock.txt /opt/env/lock.txt",
        f"RUN PY=/opt/env/bin/python; {PIP} \\",
        ' && if [ -n "$PIPWHL" ]; then python3 -m venv --without-pip /opt/env; \\',
        "    else python3 -m venv /opt/env; fi \\",
        " && pip install --no-cache-dir --no-deps --no-index --no-compile \\",
        "    --disable-pip-version-check \\",
        f"    --find-links {wheels_url} -r /opt/env/lock.txt \\",
        *_compile_step(purelib),
        # The agent's own venv last on sys.path: the lock's packages win, the agent's helpers
        # that the lock does not name are found there.
        " && ls -d /opt/overcast/venv/lib/python3*/site-packages \\",
        f"    > {purelib}/overcast-agent.pth",
        "ENV PATH=/opt/env/bin:$PATH",
        "LABEL overcast.lock-hash={lock_hash}",
        "",
    ])


def login_command(plan: BuildPlan) -> str:
    q = shlex.quote
    if plan.registry_kind == "ecr":
        return (f"{AGENT_PYTHON} -m overcast.agent.registry_login {q(plan.region or '')} | "
                f"docker login --username AWS --password-stdin {q(plan.registry_server)}")
    return (f"docker login --username {q(plan.username or '')} --password-stdin "
            f"{q(plan.registry_server)} < {TOKEN_FILE}")


def build_script(plan: BuildPlan) -> str:
    """The builder's shell script (POSIX sh) for `plan`. Each step's own output goes to a log
    file; the console gets the progress lines, and a failed step's last lines."""
    q = shlex.quote
    excludes = " ".join(f"--exclude={q(x)}" for x in TAR_EXCLUDES)
    return "\n".join([
        "#!/bin/sh", "set -eu", f'say() {{ echo "{MARK} $*"; }}',
        "WORK=$(mktemp -d)", "cd \"$WORK\"", "STEP=start",
        'step() { STEP=$1; shift; say "$STEP"; "$@" > "$WORK/$STEP.log" 2>&1; }',
        "finish() { code=$?; if [ $code -ne 0 ]; then tail -n 20 \"$WORK/$STEP.log\" "
        "2>/dev/null || true; say \"FAILED at step $STEP (exit $code)\"; fi; "
        "[ -z \"${SERVER:-}\" ] || kill $SERVER 2>/dev/null || true; }",
        "trap finish EXIT",
        "cat > lock.txt <<'OVERCAST_LOCK'", plan.lock_text.rstrip("\n"), "OVERCAST_LOCK",
        f"login() {{ {login_command(plan)}; }}",
        "step login login",
        f"mkdir -p {WHEELS}",
        f"PY={AGENT_PYTHON}; {PIP}",
        f"step wheels pip download --no-deps --disable-pip-version-check --dest {WHEELS} "
        "-r lock.txt",
        f"ADDRESS=$({AGENT_PYTHON} -c {q(_ADDRESS)})",
        f"python3 -u -c {q(_SERVE)} \"$ADDRESS\" {WHEELS} > serve.out 2> serve.log &",
        "SERVER=$!",
        "for i in $(seq 50); do [ -s serve.out ] && break; sleep 0.1; done",
        "WHEELS_URL=\"http://$ADDRESS:$(head -n 1 serve.out)/\"",
        f"base() {{ tar -C / {excludes} -cf - . | docker import - {q(plan.base_tag)}; }}",
        "step base base",
        "cat > Dockerfile <<'OVERCAST_DOCKERFILE'",
        dockerfile(plan.base_tag).replace("{lock_hash}", plan.lock_hash).rstrip("\n"),
        "OVERCAST_DOCKERFILE",
        f"step build docker build --network host --build-arg WHEELS_URL=\"$WHEELS_URL\" "
        f"-t {q(plan.image_uri)} .",
        f"step push docker push {q(plan.image_uri)}",
        f"docker rmi {q(plan.base_tag)} >/dev/null 2>&1 || true",
        f"say done {q(plan.image_uri)}", "",
    ])


def builder_user_data(plan: BuildPlan, registry_token: str | None = None) -> str:
    """The builder's cloud-config: the script (and, for Docker Hub, the token in a root-only
    file that the base image leaves out), then run the script."""
    import yaml

    files: list[dict[str, Any]] = [{"path": SCRIPT, "permissions": "0755",
                                    "content": build_script(plan)}]
    if registry_token is not None:
        files.append({"path": TOKEN_FILE, "permissions": "0600", "owner": "root:root",
                      "content": registry_token})
    doc = {"write_files": files, "runcmd": [["/bin/sh", SCRIPT]]}
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False, width=1 << 20)


@dataclass(frozen=True)
class Progress:
    steps: list[str]  # the progress lines, oldest first, without the mark
    done: str | None  # the image pushed
    failed: str | None  # why the build failed


def progress(console: str) -> Progress:
    """The build's state from the builder's console output."""
    steps: list[str] = []
    done = failed = None
    for line in console.splitlines():
        _, mark, rest = line.partition(MARK)
        if not mark:
            continue
        rest = rest.strip()
        steps.append(rest)
        if rest.startswith("done "):
            done = rest[5:].strip()
        elif rest.startswith("FAILED"):
            failed = rest
    return Progress(steps, done, failed)


def build_environment(ctx: Any, plan: BuildPlan, *, image_id: str, subnet_id: str,
                      instance_profile: str | None, tags: dict[str, str], client_token: str,
                      registry_token: str | None = None) -> str:
    """Launch the builder of `plan` (or find the one launched with `client_token`) from the
    account's overcast VM image; returns its instance id. The reconciler follows its console
    (`progress`) and records `plan.image_uri` when it says done (reconciler/envbuilds.py)."""
    from overcast.backends import vm_images

    info = vm_images.launch_builder(
        ctx, image_id=image_id, subnet_id=subnet_id, instance_profile=instance_profile,
        user_data=builder_user_data(plan, registry_token), tags=tags,
        client_token=client_token, role="env-builder")
    return info.aws_id
