"""First-run set-up: an admin user, their personal account and an API token."""

from __future__ import annotations

from sqlalchemy import select

from overcast.server.auth import issue_token, slugify
from overcast.store.db import Database
from overcast.store.models import Account, Membership, User


def create_user(session, username: str, *, is_admin: bool = False,
                password_hash: str | None = None) -> User:
    """A user and their personal account (slug from the username)."""
    user = User(username=username, is_admin=is_admin, password_hash=password_hash)
    account = Account(slug=_free_slug(session, slugify(username)), is_team=False)
    session.add_all([user, account])
    session.flush()
    session.add(Membership(user_id=user.id, account_id=account.id, role="admin"))
    user.default_account_id = account.id
    session.flush()
    return user


def _free_slug(session, base: str) -> str:
    slug, n = base, 1
    while session.scalar(select(Account).where(Account.slug == slug)) is not None:
        n += 1
        slug = f"{base}-{n}"
    return slug


def ensure_first_user(username: str, db: Database | None = None) -> tuple[str, str]:
    """Create the admin user (once) and return (personal account slug, a new API token)."""
    db = db or Database()
    db.migrate()
    with db.session() as session:
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            user = create_user(session, username, is_admin=True)
        account = session.get(Account, user.default_account_id)
        token = issue_token(session, user, name="overcast-up")
        return account.slug, token
