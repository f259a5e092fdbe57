"""The two IAM policy documents a customer attaches (setup, ongoing), as data.

`policies/README.md` says why each action is there. The documents list exactly the API
operations this package calls, plus the few actions AWS checks implicitly (`IMPLIED`).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

NAMES = ("setup", "ongoing")
_DIR = Path(__file__).parent / "policies"

# Authorised by AWS without a call of that name: tags passed at creation (TagSpecifications,
# Tags=) need the Tag* action, and RunInstances with an instance profile needs iam:PassRole.
# A recorder of "service:Operation" calls never sees these.
IMPLIED = frozenset(
    {
        "ec2:CreateTags",
        "iam:TagRole",
        "iam:TagInstanceProfile",
        "logs:TagResource",
        "ecr:TagResource",
        "iam:PassRole",
    }
)


@cache
def _load(name: str) -> str:
    if name not in NAMES:
        raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(NAMES)}")
    return (_DIR / f"{name}.json").read_text()


def load(name: str) -> dict:
    """The policy document (a fresh dict each call, safe to modify)."""
    return json.loads(_load(name))


def text(name: str) -> str:
    """The document as pretty JSON, for the setup wizard's copy box."""
    return _load(name)


def actions(name: str) -> set[str]:
    out: set[str] = set()
    for statement in load(name)["Statement"]:
        acts = statement["Action"]
        out.update([acts] if isinstance(acts, str) else acts)
    return out


def all_actions() -> set[str]:
    return actions("setup") | actions("ongoing")
