"""A spec's lock (exact pins, one per line) and its hash: the image's content address.

Package sync specs are already exact (the client's installed versions), so their lock is
made here with no resolution. pip / requirements specs are resolved with `uv pip compile
--no-build`: metadata only (wheels' METADATA from the index), never a package's build code,
so it is safe on the control plane host; builds run in the account (docs/software-environments.md).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from importlib.metadata import version
from typing import Any

from overcast.envs.spec import canonical_name

DEFAULT_PYTHON = "3.11"  # the overcast VM image's Python (Debian 12)
PLATFORM = "x86_64-manylinux_2_28"  # what the VMs are
RESOLVE_TIMEOUT = 120.0
# Our own package comes with the VM image (the agent); tools pip brings along are not ours.
NOT_SYNCED = {"overcast", "pip", "setuptools", "wheel", "uv"}


class LockError(RuntimeError):
    """The spec did not resolve; the message names what (never a secret)."""


def lock_hash(lock_text: str) -> str:
    return hashlib.sha256(lock_text.encode()).hexdigest()


def render(python: str, pins: dict[str, str]) -> str:
    """The canonical lock text: a python line, then sorted `name==version` lines."""
    lines = [f"# python {python}"]
    lines += [f"{name}=={pins[name]}" for name in sorted(pins)]
    return "\n".join(lines) + "\n"


def package_sync_lock(spec: dict[str, Any]) -> str:
    pins = {canonical_name(p["name"]): p["version"] for p in spec["packages"]
            if canonical_name(p["name"]) not in NOT_SYNCED}
    return render(spec["python"], pins)


def parse_compiled(text: str) -> dict[str, str]:
    """`uv pip compile` output (name==version lines, maybe with markers) -> pins."""
    pins: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip().rstrip("\\").strip()
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;]+)", line)
        if m:
            pins[canonical_name(m.group(1))] = m.group(3)
    return pins


def requirement_lines(spec: dict[str, Any]) -> list[str]:
    """What to resolve: the user's lines, plus the control plane's `distributed` when the
    spec names neither dask nor distributed (the agent runs dask inside the image)."""
    if spec["kind"] == "pip":
        lines = list(spec["packages"])
    else:
        lines = [ln for ln in spec["requirements"].splitlines()
                 if ln.strip() and not ln.strip().startswith("#")]
    names = {canonical_name(re.split(r"[\[<>=!~;@ ]", ln.strip(), maxsplit=1)[0])
             for ln in lines}
    if not names & {"dask", "distributed"}:
        lines.append(f"distributed=={version('distributed')}")
    return lines


def uv_env() -> dict[str, str]:
    """uv with the host's pip settings: its index and CA bundle (uv reads its own names)."""
    env = dict(os.environ)
    if env.get("PIP_INDEX_URL") and not env.get("UV_INDEX_URL"):
        env["UV_DEFAULT_INDEX"] = env["PIP_INDEX_URL"]
    cert = env.get("PIP_CERT")
    if cert and not env.get("SSL_CERT_FILE"):
        env["SSL_CERT_FILE"] = cert
    env.setdefault("UV_NO_CONFIG", "1")
    return env


def cache_dir() -> str:
    """uv's metadata cache, kept across locks (a second lock of the same packages is fast)."""
    from overcast import settings

    path = settings.home() / "cache" / "uv"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def resolve(spec: dict[str, Any], python: str = DEFAULT_PYTHON,
            timeout: float = RESOLVE_TIMEOUT) -> str:
    """Lock a pip / requirements spec with uv (metadata only: `--no-build`)."""
    from uv import find_uv_bin

    with tempfile.TemporaryDirectory(prefix="overcast-lock-") as tmp:
        req = os.path.join(tmp, "requirements.in")
        with open(req, "w") as f:
            f.write("\n".join(requirement_lines(spec)) + "\n")
        cmd = [find_uv_bin(), "pip", "compile", req, "--no-build", "--no-header",
               "--no-annotate", "--quiet", "--python-version", python,
               "--python-platform", PLATFORM, "--cache-dir", cache_dir()]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env=uv_env(), cwd=tmp)
        except subprocess.TimeoutExpired:
            raise LockError(f"Resolving the packages took over {timeout:.0f} s; "
                            f"try again, or pin versions.") from None
    if done.returncode != 0:
        raise LockError("The packages do not resolve: " + _uv_reason(done.stderr))
    return render(python, parse_compiled(done.stdout))


def _uv_reason(stderr: str) -> str:
    """uv's explanation without its progress noise (it names the package and versions)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    keep = [ln for ln in lines if not ln.startswith(("Resolved", "Using", "warning:"))]
    text = " ".join(keep)[:800]
    return text or "uv gave no reason"
