"""Nothing outside overcast/backends/ imports overcast.backends.aws: every other package
reaches a cloud through the provider interface (overcast.backends.base, provider_for)."""

from __future__ import annotations

import ast
from pathlib import Path

import overcast

ROOT = Path(overcast.__file__).parent
FORBIDDEN = "overcast.backends.aws"


def _package(path: Path) -> str:
    return ".".join(("overcast", *path.relative_to(ROOT).with_suffix("").parts[:-1]))


def _imports(source: str, package: str) -> list[str]:
    """Absolute names of every module `source` imports (relative imports resolved)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.append(base)
            names += [f"{base}.{a.name}" for a in node.names]
    return names


def test_only_backends_import_the_aws_backend():
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.is_relative_to(ROOT / "backends"):
            continue
        names = _imports(path.read_text(), _package(path))
        bad = [n for n in names if n == FORBIDDEN or n.startswith(FORBIDDEN + ".")]
        if bad:
            offenders.append(f"{path.relative_to(ROOT.parent)}: {', '.join(sorted(set(bad)))}")
    assert offenders == [], "import the provider interface instead:\n" + "\n".join(offenders)


def test_the_rule_sees_relative_and_lazy_imports():
    code = "def f():\n    from ..backends.aws import errors\n    import overcast.backends.aws\n"
    names = _imports(code, "overcast.reconciler")
    assert "overcast.backends.aws.errors" in names and "overcast.backends.aws" in names
    assert _imports("from .aws import x\n", "overcast.backends") == [
        "overcast.backends.aws", "overcast.backends.aws.x"]
