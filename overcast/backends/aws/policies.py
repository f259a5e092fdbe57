"""The two IAM policy documents a customer attaches (setup, ongoing), as data.

`policies/README.md` says why each action is there. The documents list exactly the API
operations this package calls, plus the few actions AWS checks implicitly (`IMPLIED`).

Statements are scoped by ARN and by tag conditions (overcast:managed and the control plane's
deployment id). The files hold two placeholders filled in by `load`: the deployment id
(`StringLike`, so "*" when unknown) and the account's instance role name for iam:PassRole.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

NAMES = ("setup", "ongoing")
_DIR = Path(__file__).parent / "policies"
DEPLOYMENT_PLACEHOLDER = "OVERCAST_DEPLOYMENT"
ROLE_PLACEHOLDER = "OVERCAST_ROLE"

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
        # AWS creates the spot service-linked role at an account's first spot launch.
        "iam:CreateServiceLinkedRole",
    }
)


@cache
def _load(name: str) -> str:
    if name not in NAMES:
        raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(NAMES)}")
    return (_DIR / f"{name}.json").read_text()


def text(name: str, deployment_id: str | None = None, role: str | None = None) -> str:
    """The document as pretty JSON, for the setup wizard's copy box: scoped to this control
    plane's `deployment_id` and the account's instance `role` (any, "*", when not given)."""
    return (_load(name).replace(DEPLOYMENT_PLACEHOLDER, deployment_id or "*")
            .replace(ROLE_PLACEHOLDER, role or "*"))


def load(name: str, deployment_id: str | None = None, role: str | None = None) -> dict:
    """The policy document (a fresh dict each call, safe to modify)."""
    return json.loads(text(name, deployment_id, role))


def actions(name: str) -> set[str]:
    out: set[str] = set()
    for statement in load(name)["Statement"]:
        acts = statement["Action"]
        out.update([acts] if isinstance(acts, str) else acts)
    return out


def all_actions() -> set[str]:
    return actions("setup") | actions("ongoing")
