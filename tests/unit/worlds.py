"""A small multi-user world for the API and dashboard tests, built once per module (migrations
and password hashing are slow) into a template database that each test copies."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from overcast.server.bootstrap import add_member, create_team, create_user
from overcast.store.db import Database
from overcast.store.models import Account, User


@contextmanager
def template_home(tmp_path_factory: pytest.TempPathFactory,
                  name: str) -> Iterator[tuple[Path, Database]]:
    """A new OVERCAST_HOME with a migrated template.db. OVERCAST_HOME stays set until the block
    ends, so the template's secrets and the tests' apps share one secret.key."""
    home = tmp_path_factory.mktemp(name)
    mp = pytest.MonkeyPatch()
    mp.setenv("OVERCAST_HOME", str(home))
    try:
        db = Database(f"sqlite:///{home / 'template.db'}")
        db.migrate()
        yield home, db
    finally:
        mp.undo()


def team_and_outsider(s: Session, team: str, admin: tuple[str, str], member: tuple[str, str],
                      outsider: tuple[str, str]) -> tuple[User, User, User, Account]:
    """Three users, each (username, password): `admin` creates `team`, `member` joins it as a
    member, `outsider` is in no team."""
    users = [create_user(s, name, password=password) for name, password in (admin, member,
                                                                            outsider)]
    account = create_team(s, users[0], team)
    add_member(s, account, member[0], "member")
    return users[0], users[1], users[2], account
