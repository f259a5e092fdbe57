"""PID 1 of every local-cloud instance container: the local cloud's stand-in for cloud-init.

This file is mounted read-only, alone, into each instance container and run by the image's
own `python3`; it imports nothing of overcast (the container sees none of the control plane's
files). What it does is what cloud-init does on an EC2 VM at first boot:

- fetch the user data from the instance metadata service (IMDSv2 token, then
  `latest/user-data`) at AWS_EC2_METADATA_SERVICE_ENDPOINT, or 169.254.169.254;
- undo gzip (and base64, as some tools send it twice encoded);
- `#!...`: write it to a file and run it as root; `#cloud-config`: run `bootcmd`, write
  `write_files`, run `runcmd`, as cloud-init's modules do, in that order;
- print everything to the console (the container's output = GetConsoleOutput);
- then stay up as init: reap orphans, and shut down on SIGTERM (`poweroff` in the image
  signals PID 1; `docker stop` does the same), ending the container = the VM powers off.
  Like a VM's init at shutdown, it first sends SIGTERM to every process and waits (up to
  SHUTDOWN_GRACE) for them to exit: services stop cleanly (the overcast agent closes dask and
  ships its last log records) before the power goes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

DEFAULT_IMDS = "http://169.254.169.254"
SCRIPT_DIR = "/var/lib/cloud/instance/scripts"
# How long processes get between SIGTERM and SIGKILL at power-off (systemd gives a service
# 90 s); the local cloud's `docker stop` waits longer (containers.GRACE).
SHUTDOWN_GRACE = 20.0


def say(message: str) -> None:
    print(f"[local-cloud-init] {message}", flush=True)


def imds_base() -> str:
    return os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT", DEFAULT_IMDS).rstrip("/")


def imds_get(path: str, attempts: int = 50) -> bytes | None:
    """GET latest/<path> with an IMDSv2 token; None on 404; retried while IMDS is not up."""
    base = imds_base()
    error: Exception | None = None
    for attempt in range(attempts):
        try:
            put = urllib.request.Request(base + "/latest/api/token", method="PUT",
                                         headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"})
            token = urllib.request.urlopen(put, timeout=5).read().decode()
            get = urllib.request.Request(f"{base}/latest/{path}",
                                         headers={"X-aws-ec2-metadata-token": token})
            return urllib.request.urlopen(get, timeout=5).read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            error = exc
        except OSError as exc:
            error = exc
        time.sleep(min(0.1 * (attempt + 1), 1.0))
    say(f"cannot read {path} from the instance metadata service: {error}")
    return None


def decode(data: bytes) -> bytes:
    """gzip'd and/or base64'd user data, as EC2 passes it through untouched."""
    for _ in range(3):
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
            continue
        stripped = data.strip()
        if stripped and not stripped.startswith((b"#", b"{", b"[")):
            try:
                data = base64.b64decode(stripped, validate=True)
                continue
            except (binascii.Error, ValueError):
                pass
        break
    return data


def run(argv: list[str] | str, shell: bool = False) -> int:
    """Run one command with the console as its output; its exit code."""
    proc = subprocess.run(argv, shell=shell, stdin=subprocess.DEVNULL, check=False)
    return proc.returncode


def run_script(data: bytes, name: str = "part-001") -> int:
    os.makedirs(SCRIPT_DIR, exist_ok=True)
    path = os.path.join(SCRIPT_DIR, name)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o700)
    code = run([path])
    if code:
        say(f"script {path} failed with exit code {code}")
    return code


def run_commands(module: str, commands: list) -> None:
    for cmd in commands or []:
        code = run(cmd, shell=True) if isinstance(cmd, str) else run([str(c) for c in cmd])
        if code:
            say(f"{module}: {cmd!r} failed with exit code {code}")


def write_files(files: list) -> None:
    for item in files or []:
        path = item["path"]
        content = item.get("content", "")
        encoding = str(item.get("encoding", "")).lower()
        data = content.encode() if isinstance(content, str) else bytes(content)
        if encoding in ("b64", "base64", "gz+b64", "gzip+base64", "gz+base64"):
            data = base64.b64decode(data)
        if encoding.startswith("gz"):
            data = gzip.decompress(data)
        os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
        with open(path, "ab" if item.get("append") else "wb") as f:
            f.write(data)
        os.chmod(path, int(str(item.get("permissions", "0644")), 8))
        if item.get("owner"):
            run(["chown", str(item["owner"]), path])


def cloud_config(text: str) -> None:
    try:
        import yaml
    except ImportError:
        say("#cloud-config needs python3-yaml in the image (cloud-init's own dependency)")
        return
    config = yaml.safe_load(text) or {}
    run_commands("bootcmd", config.get("bootcmd"))
    write_files(config.get("write_files"))
    run_commands("runcmd", config.get("runcmd"))


def boot() -> None:
    instance_id = (imds_get("meta-data/instance-id") or b"").decode()
    say(f"booting instance {instance_id}")
    # cloud-init runs user data once per instance: not again after a stop and start.
    done = os.path.join("/var/lib/cloud/instances", instance_id or "unknown", "boot-finished")
    if os.path.exists(done):
        say("user data already ran on this instance")
        return
    data = decode(imds_get("user-data") or b"")
    if data.startswith(b"#!"):
        say("running the user data script")
        run_script(data)
    elif data.startswith(b"#cloud-config"):
        say("applying #cloud-config")
        cloud_config(data.decode())
    elif data.strip():
        say("user data is neither a #! script nor #cloud-config: ignored, as cloud-init does")
    os.makedirs(os.path.dirname(done), exist_ok=True)
    with open(done, "w") as f:
        f.write(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
    say("boot finished")


class PowerOff(BaseException):
    """SIGTERM to PID 1: `poweroff` inside the instance, or the local cloud stopping it."""


_powering_off = False


def _power_off(signum: int, _frame: object) -> None:
    global _powering_off
    if _powering_off:  # `poweroff` run by a service that is stopping: already on the way
        return
    _powering_off = True
    # Every process now, before anything else runs: the user data's commands (the overcast
    # agent's service runs in the foreground of runcmd) get SIGTERM, not the SIGKILL that
    # subprocess.run sends its child when this exception goes through it.
    signal_all(signal.SIGTERM)
    raise PowerOff(signum)


def signal_all(sig: int) -> None:
    """`sig` to every other process of the instance. Only as PID 1 of the container's own PID
    namespace: elsewhere kill(-1) would reach every process of the machine."""
    if os.getpid() == 1:
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, sig)


def wait_for_processes(grace: float) -> bool:
    """Reap until no process is left (True), or `grace` seconds pass (False). Orphans are PID
    1's children, so no child left means no process left."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            time.sleep(0.05)
    return False


def main() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGPWR):
        signal.signal(sig, _power_off)
    os.environ.setdefault("HOME", "/root")
    try:
        try:
            boot()
        except Exception as exc:  # noqa: BLE001 (broken user data must not kill init: VM stays up)
            say(f"user data failed: {type(exc).__name__}: {exc}")
        while True:  # init: reap orphans until powered off
            with contextlib.suppress(ChildProcessError):
                os.waitpid(-1, os.WNOHANG)
            time.sleep(0.2)
    except PowerOff:
        say("powering off: stopping every process")
        if not wait_for_processes(SHUTDOWN_GRACE):
            say(f"processes still running after {SHUTDOWN_GRACE:.0f} s: killing them")
            signal_all(signal.SIGKILL)
        say("powering off")
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
