"""What a software environment spec may be, checked and normalised (no I/O).

Four kinds, stored as JSON on `SoftwareEnvironment.spec`:
  {"kind": "pip", "packages": ["pandas==2.2.3", "scikit-learn"]}
  {"kind": "requirements", "requirements": "<requirements.txt text>"}
  {"kind": "container", "image": "registry/repo:tag"}
  {"kind": "package_sync", "python": "3.11", "packages": [{"name", "version"}],
   "local": [{"name", "version", "url"}]}
"""

from __future__ import annotations

import re
from typing import Any

KINDS = ("pip", "requirements", "container", "package_sync")
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# PEP 508 name, then anything a requirement line may carry (extras, specifiers, markers).
_REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._ -]+\])?\s*"
                          r"([<>=!~;@ ].*)?$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:-]{0,254}(@sha256:[0-9a-f]{64})?$")
_PYTHON = re.compile(r"^3\.\d{1,2}$")
MAX_PACKAGES = 2000
MAX_REQUIREMENTS_CHARS = 200_000
# Options that make pip fetch from elsewhere or run code from a path: not in a spec.
_FORBIDDEN_OPTIONS = ("-e", "--editable", "-r", "--requirement", "-c", "--constraint",
                      "-f", "--find-links", "-i", "--index-url", "--extra-index-url")


class SpecError(ValueError):
    """A spec that cannot be used; the message says what to change."""


def canonical_name(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise SpecError(f"Software environment name {name!r} is not valid: use lowercase "
                        f"letters, digits and '-', up to 63 characters, starting with a "
                        f"letter or digit.")
    return name


def normalise(spec: Any) -> dict[str, Any]:
    """A checked copy of `spec` in its stored form, or SpecError."""
    if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
        raise SpecError(f"A spec needs \"kind\": one of {', '.join(KINDS)}.")
    kind = spec["kind"]
    if kind == "pip":
        return {"kind": kind, "packages": _requirement_lines(spec.get("packages"), "pip")}
    if kind == "requirements":
        text = spec.get("requirements")
        if not isinstance(text, str) or len(text) > MAX_REQUIREMENTS_CHARS:
            raise SpecError("\"requirements\" must be the text of a requirements file "
                            f"(at most {MAX_REQUIREMENTS_CHARS} characters).")
        lines = [ln.split(" #")[0].strip() for ln in text.splitlines()]
        _requirement_lines([ln for ln in lines if ln and not ln.startswith("#")],
                           "requirements")
        return {"kind": kind, "requirements": text}
    if kind == "container":
        image = spec.get("image")
        if not isinstance(image, str) or not _IMAGE.match(image):
            raise SpecError(f"Container image {image!r} is not a valid image reference: use "
                            f"e.g. 'registry.example.com/team/image:tag'.")
        return {"kind": kind, "image": image}
    return _package_sync(spec)


def _requirement_lines(items: Any, where: str) -> list[str]:
    if not isinstance(items, list) or not items or len(items) > MAX_PACKAGES:
        raise SpecError(f"The {where} spec needs a list of 1 to {MAX_PACKAGES} requirements, "
                        f"e.g. [\"pandas==2.2.3\"].")
    out = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise SpecError(f"Requirement {item!r} is not a string like 'pandas==2.2.3'.")
        line = item.strip()
        if line.split()[0] in _FORBIDDEN_OPTIONS or line.startswith("-"):
            raise SpecError(f"{line!r}: pip options (editable installs, other indexes, "
                            f"nested files) are not allowed in a spec; list packages only.")
        if not _REQUIREMENT.match(line) or "://" in line.split(";")[0] and "@" not in line:
            raise SpecError(f"{line!r} is not a requirement: write it as 'name', "
                            f"'name==version' or 'name>=version'.")
        out.append(line)
    return out


def _package_sync(spec: dict[str, Any]) -> dict[str, Any]:
    python = spec.get("python")
    if not isinstance(python, str) or not _PYTHON.match(python):
        raise SpecError(f"Package sync needs \"python\" as 'major.minor', not {python!r}.")
    packages = spec.get("packages")
    if not isinstance(packages, list) or len(packages) > MAX_PACKAGES:
        raise SpecError(f"Package sync needs \"packages\": at most {MAX_PACKAGES} "
                        f"{{\"name\", \"version\"}} entries.")
    seen: dict[str, str] = {}
    for p in packages:
        if not (isinstance(p, dict) and isinstance(p.get("name"), str)
                and isinstance(p.get("version"), str)
                and _REQUIREMENT.match(f"{p['name']}=={p['version']}")):
            raise SpecError(f"Package sync entry {p!r} needs a \"name\" and an exact "
                            f"\"version\".")
        seen[canonical_name(p["name"])] = p["version"].strip()
    local = spec.get("local") or []
    if not isinstance(local, list) or not all(isinstance(x, dict) and isinstance(
            x.get("name"), str) for x in local):
        raise SpecError("Package sync \"local\" must be a list of {\"name\", ...} entries.")
    return {"kind": "package_sync", "python": python,
            "packages": [{"name": n, "version": v} for n, v in sorted(seen.items())],
            "local": [{"name": x["name"], "version": str(x.get("version") or ""),
                       "url": str(x.get("url") or "")} for x in local]}


def local_only_names(spec: dict[str, Any]) -> list[str]:
    """Names of local-only installs (editable / from a path) that no builder can fetch."""
    return sorted(x["name"] for x in spec.get("local") or [])
