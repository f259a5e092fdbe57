#!/bin/sh
# overcast VM image bootstrap: turns a stock Debian 12 instance into an overcast VM image.
#
# Runs once, as root, on a builder instance launched by `overcast image build` from the stock
# Debian 12 AMI (cloud-init runs it from the builder's user data). It installs:
#   1. Python with venv (Debian's python3, python3-venv),
#   2. a container runtime (Debian's docker.io; see "Container runtime" below),
#   3. overcast-agent of exactly the control plane's version, from the control plane itself
#      (GET /api/v1/dist/...; sha256-checked; dependencies pinned by its constraints file),
#   4. the agent service: a systemd unit (real VMs) and the two small scripts that start it and
#      power the VM off when the agent exits (the instance-side watchdog),
# then reports success or failure to the control plane (one-time build token) and prints a
# marker line on the console either way. It does not power off: the control plane snapshots
# the running builder (CreateImage) and terminates it.
#
# Settings (environment, or /etc/overcast/build.env written by cloud-init):
#   OVERCAST_CONTROL_PLANE       URL of the control plane, as VMs reach it    (required)
#   OVERCAST_VERSION             overcast version to install                  (required)
#   OVERCAST_BUILD_ID            build id, for the report                     (optional)
#   OVERCAST_BUILD_TOKEN         one-time token for the report                (optional)
#   OVERCAST_CONTROL_PLANE_CA    file with the PEM CA(s) to trust for the control plane
#                                (default /etc/overcast/control-plane-ca.pem when present)
#   OVERCAST_CONTAINER_RUNTIME   auto | required | skip                       (default auto)
#
# Container runtime: on a real VM `apt-get install docker.io` works (the VPC's NAT reaches
# Debian's mirrors). Where apt cannot reach a mirror (the local cloud gives instances only the
# package registries PyPI is served from), "auto" records that the image has no container
# runtime and goes on: today's agent runs dask in its own process and needs none. "required"
# makes a missing runtime fail the build; "skip" does not try.
set -eu

MARK="overcast-bootstrap:"
PREFIX=/opt/overcast
VENV=$PREFIX/venv
ETC=/etc/overcast
WORK=$(mktemp -d /tmp/overcast-build.XXXXXX)
STEP="start"
MINE=""

[ -f $ETC/build.env ] && . $ETC/build.env
: "${OVERCAST_CONTROL_PLANE:?set OVERCAST_CONTROL_PLANE}"
: "${OVERCAST_VERSION:?set OVERCAST_VERSION}"
OVERCAST_BUILD_ID=${OVERCAST_BUILD_ID:-}
OVERCAST_BUILD_TOKEN=${OVERCAST_BUILD_TOKEN:-}
OVERCAST_CONTAINER_RUNTIME=${OVERCAST_CONTAINER_RUNTIME:-auto}
if [ -z "${OVERCAST_CONTROL_PLANE_CA:-}" ] && [ -f $ETC/control-plane-ca.pem ]; then
    OVERCAST_CONTROL_PLANE_CA=$ETC/control-plane-ca.pem
fi
export OVERCAST_CONTROL_PLANE OVERCAST_CONTROL_PLANE_CA="${OVERCAST_CONTROL_PLANE_CA:-}"
DIST="${OVERCAST_CONTROL_PLANE%/}/api/v1/dist"

say() { echo "$MARK $*"; }

# HTTP with Python's standard library (a minimal Debian has no curl), trusting the control
# plane's CA when one is given. Usage: http GET url outfile | http POST url json-body
cat > "$WORK/fetch.py" <<'EOF'
import os, ssl, sys, time, urllib.error, urllib.request
method, url = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context()
if os.environ.get("OVERCAST_CONTROL_PLANE_CA"):
    ctx.load_verify_locations(cafile=os.environ["OVERCAST_CONTROL_PLANE_CA"])
headers = {"Content-Type": "application/json"}
if os.environ.get("OVERCAST_BUILD_TOKEN"):
    headers["Authorization"] = "Bearer " + os.environ["OVERCAST_BUILD_TOKEN"]
data = sys.argv[3].encode() if method == "POST" else None
# A control plane being restarted or deployed answers 5xx or not at all for a moment: retry
# those (5 tries over ~30 s); a 4xx is an answer, and ends the step.
for attempt in range(5):
    try:
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, context=ctx, timeout=60) as resp:
            body = resp.read()
        break
    except (urllib.error.URLError, OSError) as exc:
        if attempt == 4 or (isinstance(exc, urllib.error.HTTPError) and exc.code < 500):
            raise
        print("overcast-bootstrap: %s %s: %s; retrying" % (method, url, exc), file=sys.stderr)
        time.sleep(2 * 2 ** attempt)
if method == "GET":
    with open(sys.argv[3], "wb") as f:
        f.write(body)
EOF
http() { OVERCAST_BUILD_TOKEN="$OVERCAST_BUILD_TOKEN" python3 "$WORK/fetch.py" "$@"; }

report() {  # report ok|failed [reason]: best effort, the console marker is the fallback
    [ -n "$OVERCAST_BUILD_ID" ] || return 0
    body=$(python3 -c 'import json,sys; print(json.dumps({"ok": sys.argv[1] == "ok",
        "reason": sys.argv[2][:500]}))' "$1" "${2:-}")
    http POST "${OVERCAST_CONTROL_PLANE%/}/api/v1/images/builds/$OVERCAST_BUILD_ID/report" \
        "$body" || say "could not report to the control plane"
}

finish() {
    code=$?
    if [ $code -ne 0 ]; then  # before the clean-up: the report needs $WORK/fetch.py
        say "FAILED at step '$STEP' (exit code $code)"
        report failed "bootstrap failed at step '$STEP' (exit code $code)"
    fi
    rm -rf "$WORK"
    if [ -n "$MINE" ]; then rm -rf "$MINE"; fi
}
trap finish EXIT

# dpkg's unsafe-io: no fsync per unpacked file (a builder's disk is snapshotted after the
# build, and a crash mid-build fails the build anyway); much faster on busy disks.
apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get -q update &&
        DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends \
            -o Dpkg::Options::=--force-unsafe-io "$@"
}

STEP="python"
say "step python"
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt_install python3 python3-venv ca-certificates
fi
python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' ||
    { say "needs Python 3.11 (Debian 12)"; exit 1; }

STEP="container-runtime"
say "step container-runtime ($OVERCAST_CONTAINER_RUNTIME)"
RUNTIME=none
if command -v dockerd >/dev/null 2>&1; then
    RUNTIME=docker
elif [ "$OVERCAST_CONTAINER_RUNTIME" != skip ]; then
    if apt_install docker.io >"$WORK/apt.log" 2>&1; then
        RUNTIME=docker
        if [ -d /run/systemd/system ]; then systemctl enable docker.service || true; fi
    elif [ "$OVERCAST_CONTAINER_RUNTIME" = required ]; then
        tail -n 20 "$WORK/apt.log"
        say "apt-get install docker.io failed"
        exit 1
    else
        say "no container runtime: apt-get install docker.io failed (see docs/boot-path.md)"
    fi
fi

STEP="download-agent"
say "step download-agent $OVERCAST_VERSION from $DIST"
http GET "$DIST/index.json" "$WORK/index.json"
FILE=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1]));
assert d["version"] == sys.argv[2], "control plane serves %s, not %s" % (d["version"], sys.argv[2]);
print(d["filename"])' "$WORK/index.json" "$OVERCAST_VERSION")
SHA=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sha256"])' "$WORK/index.json")
http GET "$DIST/overcast-agent-$OVERCAST_VERSION.whl" "$WORK/$FILE"
http GET "$DIST/constraints-$OVERCAST_VERSION.txt" "$WORK/constraints.txt"
echo "$SHA  $WORK/$FILE" | sha256sum -c - >/dev/null || { say "sha256 mismatch for $FILE"; exit 1; }

STEP="install-agent"
say "step install-agent"
rm -rf "$VENV"
mkdir -p "$PREFIX" "$ETC"
# The venv without a pip of its own: pip runs from Debian's pip wheel (python3-venv brings it),
# which spares the build ensurepip's install and byte-compilation of pip itself.
PIPWHL=$(ls /usr/share/python-wheels/pip-*.whl 2>/dev/null | head -n 1)
if [ -n "$PIPWHL" ]; then
    python3 -m venv --without-pip "$VENV"
    pip() { "$VENV/bin/python" "$PIPWHL/pip" --no-input --quiet --disable-pip-version-check "$@"; }
else
    python3 -m venv "$VENV"
    pip() { "$VENV/bin/pip" --no-input --quiet --disable-pip-version-check "$@"; }
fi
# Dependencies, every version pinned by the constraints file. Where the cloud mounts a package
# mirror at /root/.cache/pip (a VPC's mirror; the local cloud does), wheels a previous build
# fetched are in overcast-wheels/ there: when it has every pinned version the install uses it
# alone. Otherwise they are downloaded (resolved against the index, hash-checked by pip) into a
# directory of this build's own (concurrent builds never see half a file), installed from
# there with --no-index, and added to the mirror; with no mirror, the clean step removes them.
# --no-compile: byte-compiling every module of pandas, pyarrow, bokeh, botocore ... took most of
# the install; the verify step below compiles what the agent imports, Python the rest on use.
WHEELS=/root/.cache/pip/overcast-wheels
mkdir -p "$WHEELS"
install_from() { pip install --no-compile --no-index --find-links "$1" \
    -c "$WORK/constraints.txt" "$WORK/$FILE"; }
if ! install_from "$WHEELS" 2>/dev/null; then
    MINE=$(mktemp -d "$WHEELS/.build-XXXXXX")
    for f in "$WHEELS"/*.whl; do [ -e "$f" ] && ln "$f" "$MINE/" 2>/dev/null || true; done
    pip download -d "$MINE" -c "$WORK/constraints.txt" "$WORK/$FILE"
    rm -f "$MINE/$FILE"  # the agent itself always comes from the control plane (sha256 above)
    install_from "$MINE"
    for f in "$MINE"/*.whl; do [ -e "$f" ] && ln "$f" "$WHEELS/" 2>/dev/null || true; done
    rm -rf "$MINE"
fi

STEP="verify"
say "step verify"
# Importing what the agent runs (its dask node, the dashboard, S3 access) also writes those
# modules' byte code into the image: an instance starts without compiling them.
"$VENV/bin/python" - <<'EOF'
import importlib.util, sys
import overcast.agent.main, overcast.agent.dask_process, overcast.bootconfig
import distributed, distributed.dashboard.scheduler, dask.dataframe, s3fs, boto3
assert importlib.util.find_spec("overcast.server") is None, "control plane code on the VM"
print("overcast-agent", overcast.__version__, "python", sys.version.split()[0])
EOF

STEP="service"
say "step service"
cat > /usr/local/sbin/overcast-agent-service <<EOF
#!/bin/sh
# Runs overcast-agent; when it exits, for any reason (its cluster stopped, it failed, or the
# control plane was unreachable for shutdown_after_unreachable), the VM powers itself off.
$VENV/bin/overcast-agent
code=\$?
echo "$MARK overcast-agent exited with code \$code; powering off"
poweroff || shutdown -h now || halt -p
exit \$code
EOF
cat > /usr/local/sbin/overcast-agent-start <<'EOF'
#!/bin/sh
# Started by the boot document's runcmd: under systemd, start the service (and return, so
# cloud-init finishes); with no init system, run the service in the foreground.
if [ -d /run/systemd/system ]; then
    exec systemctl start --no-block overcast-agent.service
fi
exec /usr/local/sbin/overcast-agent-service
EOF
chmod 0755 /usr/local/sbin/overcast-agent-service /usr/local/sbin/overcast-agent-start
mkdir -p /etc/systemd/system
cat > /etc/systemd/system/overcast-agent.service <<'EOF'
[Unit]
Description=overcast agent (dask scheduler or worker of an overcast cluster)
After=network-online.target cloud-final.service
Wants=network-online.target
ConditionPathExists=/etc/overcast/boot.json

[Service]
Type=simple
ExecStart=/usr/local/sbin/overcast-agent-service
Restart=no
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
EOF

STEP="clean"
say "step clean"
python3 -c 'import json,sys,time; json.dump({"version": sys.argv[1], "container_runtime":
    sys.argv[2], "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    open(sys.argv[3], "w"))' "$OVERCAST_VERSION" "$RUNTIME" "$ETC/image.json"
# Nothing of this build in the image: its token, package caches. (cloud-init's own state
# stays: an instance of the image has a new instance id, so cloud-init runs its user data;
# `cloud-init clean` here would make the builder run this script again when CreateImage
# reboots it.)
rm -f $ETC/build.env $ETC/boot.json
rm -rf /var/lib/apt/lists/*
# A package cache mounted by the cloud (a mirror) is not on this disk: leave it alone.
if ! python3 -c 'import os,sys; sys.exit(not os.path.ismount(sys.argv[1]))' /root/.cache/pip; then
    rm -rf /root/.cache/pip
fi

STEP="report"
say "OK overcast-agent $OVERCAST_VERSION installed (container runtime: $RUNTIME)"
report ok
