"""The agent-only wheel the control plane serves to builder VMs (`/api/v1/dist/...`).

A VM gets `overcast-agent` of exactly the control plane's version, and nothing of the control
plane: the wheel holds only `overcast.agent` and the overcast modules it imports (found by
reading their imports: `overcast.bootconfig`, `overcast.security`, ...), so `overcast.server`
is not importable on a VM. It is written
straight from the installed package's files with `zipfile` (the wheel format is a zip with a
`.dist-info`): no build backend, no subprocess, no network at server start, and the same
bytes on every start (fixed timestamps, sorted entries), so its sha256 is stable.

Its runtime requirements are pinned to the versions installed beside the control plane
(which are requirements.lock's); `constraints()` pins their whole dependency closure.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import threading
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import overcast

DIST_NAME = "overcast-agent"
WHEEL_NAME = "overcast_agent"
# What the agent and a dask worker on the VM need, with extras (pinned at install time).
RUNTIME = ["dask[dataframe]", "distributed", "pyarrow", "pandas", "s3fs", "boto3", "botocore",
           "aiobotocore", "bokeh", "httpx", "cryptography", "pyyaml"]
INIT = '''"""overcast-agent: the part of overcast that runs on a VM (no control plane here)."""

__version__ = "{version}"
'''
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class AgentWheel:
    version: str
    filename: str  # the wheel's standard file name (pip insists on it)
    data: bytes
    sha256: str
    constraints: str

    def index(self) -> dict[str, str]:
        """What a builder downloads; paths relative to /api/v1/dist/ (a proxy in front of
        the control plane may rewrite its host)."""
        return {"version": self.version, "filename": self.filename, "sha256": self.sha256,
                "wheel": f"{DIST_NAME}-{self.version}.whl",
                "constraints": f"constraints-{self.version}.txt"}


def _pinned(spec: str) -> str:
    req = Requirement(spec)
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    return f"{req.name}{extras}=={metadata.version(req.name)}"


def requirements() -> list[str]:
    return [_pinned(spec) for spec in RUNTIME]


def constraints() -> str:
    """Every distribution the runtime requirements pull in, pinned at the installed version."""
    env = default_environment()
    seen: dict[str, str] = {}
    todo = [Requirement(spec) for spec in RUNTIME]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency this machine does not have: not pinned
        extras = set(req.extras)
        if name in seen and not extras:
            continue
        seen[name] = dist.version
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({**env, "extra": e})
                                         for e in (extras or {""})):
                todo.append(sub)
    return "".join(f"{n}=={v}\n" for n, v in sorted(seen.items()))


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def _imported(path: Path) -> set[str]:
    """The `overcast.*` modules a file imports (also inside functions), absolute imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in names if n.startswith("overcast.")}


def agent_modules() -> list[str]:
    """The package subset: every file of overcast/agent and, transitively, each overcast
    module they import (with its packages' __init__), as paths relative to site-packages.
    overcast/__init__.py is not among them: the wheel has its own (INIT)."""
    top = Path(overcast.__file__).parent
    base = top.parent
    todo = sorted((top / "agent").glob("*.py"))
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for parent in path.parents:  # the packages it lives in
            if parent == top or top not in parent.parents:
                break
            todo.append(parent / "__init__.py")
        for name in _imported(path):
            for candidate in (base / (name.replace(".", "/") + ".py"),
                              base / name.replace(".", "/") / "__init__.py"):
                if candidate.is_file():
                    todo.append(candidate)
    return sorted(p.relative_to(base).as_posix() for p in seen)


def _files(version: str) -> dict[str, bytes]:
    root = Path(overcast.__file__).parent.parent
    files = {path: (root / path).read_bytes() for path in agent_modules()}
    files["overcast/__init__.py"] = INIT.format(version=version).encode()
    info = f"{WHEEL_NAME}-{version}.dist-info"
    meta = ["Metadata-Version: 2.1", f"Name: {DIST_NAME}", f"Version: {version}",
            "Summary: overcast's VM agent (built by the control plane for its VM image)",
            "Requires-Python: >=3.11"] + [f"Requires-Dist: {r}" for r in requirements()]
    files[f"{info}/METADATA"] = ("\n".join(meta) + "\n").encode()
    files[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: overcast.server.dist\n"
                              b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    files[f"{info}/entry_points.txt"] = (b"[console_scripts]\n"
                                         b"overcast-agent = overcast.agent.main:main\n")
    files[f"{info}/top_level.txt"] = b"overcast\n"
    record = [_record_line(p, d) for p, d in sorted(files.items())] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    return files


def build(version: str | None = None) -> AgentWheel:
    version = version or overcast.__version__
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in sorted(_files(version).items()):
            entry = zipfile.ZipInfo(path, date_time=_EPOCH)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(entry, data)
    data = buf.getvalue()
    return AgentWheel(version=version, filename=f"{WHEEL_NAME}-{version}-py3-none-any.whl",
                      data=data, sha256=hashlib.sha256(data).hexdigest(),
                      constraints=constraints())


_built: AgentWheel | None = None
# One build at a time: two image builders asking at once had two threads in ast.parse, which
# CPython 3.11 before 3.11.9 does not survive ("AST constructor recursion depth mismatch",
# a SystemError; gh-106905), and the builder got a 500.
_build_lock = threading.Lock()


def agent_wheel() -> AgentWheel:
    """Built once per server process (~10 ms), on first use or by `prebuild`."""
    global _built
    with _build_lock:
        if _built is None:
            _built = build()
        return _built


def prebuild() -> None:
    """At server start, in the background: the first builder VM finds the wheel ready."""
    threading.Thread(target=agent_wheel, name="overcast-agent-wheel", daemon=True).start()
