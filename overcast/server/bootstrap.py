"""Users, personal and team accounts, memberships; and first-run set-up."""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from overcast.server.auth import ROLES, issue_token, slugify
from overcast.server.passwords import hash_password
from overcast.store.db import Database
from overcast.store.models import Account, Membership, User

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Slugs that would shadow dashboard or API paths if ever used in one.
RESERVED_SLUGS = {"api", "static", "login", "logout", "signup", "teams", "tokens", "operator",
                  "admin", "new"}


class AccountError(ValueError):
    """Bad user/team/member input; the message says what to change."""


def check_username(username: str) -> str:
    username = username.strip()
    if not USERNAME.match(username):
        raise AccountError("Use a username of letters, digits, '.', '_' or '-' (up to 64, "
                           "starting with a letter or digit).")
    return username


def create_user(session: Session, username: str, *, is_admin: bool = False,
                password_hash: str | None = None, password: str | None = None) -> User:
    """A user and their personal account (slug from the username)."""
    if password is not None:
        password_hash = hash_password(password)
    if session.scalar(select(User).where(func.lower(User.username) == username.lower())):
        raise AccountError(f"The username {username!r} is taken; pick another.")
    user = User(username=username, is_admin=is_admin, password_hash=password_hash)
    account = Account(slug=_free_slug(session, slugify(username)), is_team=False)
    session.add_all([user, account])
    session.flush()
    session.add(Membership(user_id=user.id, account_id=account.id, role="admin"))
    user.default_account_id = account.id
    session.flush()
    return user


def create_team(session: Session, owner: User, name: str) -> Account:
    """A team account; its creator is its first admin."""
    # No fallback slug here: "" or "  " must be refused, not become a team called "user".
    slug = re.sub(r"[^a-z0-9-]+", "-", name.strip().lower()).strip("-")
    if not re.match(r"^[a-z0-9][a-z0-9-]{1,47}$", slug) or slug in RESERVED_SLUGS:
        raise AccountError(f"{name!r} cannot be a team name: use 2-48 letters, digits or '-', "
                           f"starting with a letter or digit (and not one of "
                           f"{', '.join(sorted(RESERVED_SLUGS))}).")
    if session.scalar(select(Account).where(Account.slug == slug)) is not None:
        raise AccountError(f"The account name {slug!r} is taken; pick another.")
    team = Account(slug=slug, is_team=True)
    session.add(team)
    session.flush()
    session.add(Membership(user_id=owner.id, account_id=team.id, role="admin"))
    session.flush()
    return team


def add_member(session: Session, account: Account, username: str, role: str) -> Membership:
    if not account.is_team:
        raise AccountError("A personal account has one member; create a team to share.")
    if role not in ROLES:
        raise AccountError(f"Role {role!r} is not one of: {', '.join(ROLES)}.")
    user = session.scalar(select(User).where(User.username == username.strip()))
    if user is None:
        raise AccountError(f"No user named {username!r}; they must sign up first.")
    row = session.scalar(select(Membership).where(Membership.account_id == account.id,
                                                  Membership.user_id == user.id))
    if row is None:
        row = Membership(user_id=user.id, account_id=account.id, role=role)
        session.add(row)
    else:
        _keep_an_admin(session, account, row, role)
        row.role = role
    session.flush()
    return row


def remove_member(session: Session, account: Account, username: str) -> None:
    row = session.scalar(select(Membership).join(User, User.id == Membership.user_id)
                         .where(Membership.account_id == account.id,
                                User.username == username))
    if row is None:
        raise AccountError(f"{username!r} is not a member of {account.slug!r}.")
    if not account.is_team:
        raise AccountError("You cannot leave your personal account.")
    _keep_an_admin(session, account, row, None)
    user = row.user
    session.delete(row)
    if user.default_account_id == account.id:
        personal = session.scalar(select(Membership.account_id).join(Account)
                                  .where(Membership.user_id == user.id,
                                         Account.is_team.is_(False)))
        user.default_account_id = personal
    session.flush()


def _keep_an_admin(session: Session, account: Account, row: Membership,
                   new_role: str | None) -> None:
    """Refuse a change that would leave the team with no admin (nobody could manage it)."""
    if row.role != "admin" or new_role == "admin":
        return
    admins = session.scalar(select(func.count()).select_from(Membership).where(
        Membership.account_id == account.id, Membership.role == "admin"))
    if admins <= 1:
        raise AccountError(f"{row.user.username!r} is the last admin of {account.slug!r}; "
                           f"make someone else admin first.")


def _free_slug(session: Session, base: str) -> str:
    if base in RESERVED_SLUGS:
        base = f"{base}-user"
    slug, n = base, 1
    while session.scalar(select(Account).where(Account.slug == slug)) is not None:
        n += 1
        slug = f"{base}-{n}"
    return slug


def ensure_first_user(username: str, db: Database | None = None,
                      password: str | None = None) -> tuple[str, str]:
    """Create the admin user (once) and return (personal account slug, a new API token)."""
    db = db or Database()
    db.migrate()
    with db.session() as session:
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            user = create_user(session, username, is_admin=True, password=password)
        elif password is not None:
            user.password_hash = hash_password(password)
        account = session.get(Account, user.default_account_id)
        token = issue_token(session, user, name="overcast-up")
        return account.slug, token
