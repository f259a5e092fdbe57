"""API tokens (stored as SHA-256 hashes), password sign-in, and the account-access checks every
route uses (the dashboard's pages use the same checks through overcast.server.web.session)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from overcast.server.passwords import hash_password, needs_rehash, verify_password
from overcast.server.usage import LastUsed
from overcast.store.models import Account, ApiToken, Membership, User

TOKEN_PREFIX = "oc_"
ROLES = ("admin", "member")


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_match(token: str, token_hash: str) -> bool:
    return hmac.compare_digest(hash_token(token), token_hash)


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return slug[:48] or "user"


def issue_token(session: Session, user: User, name: str = "default") -> str:
    token = new_token()
    session.add(ApiToken(user_id=user.id, name=name[:64], token_hash=hash_token(token),
                         prefix=token[:8]))
    return token


def user_for_token(session: Session, token: str,
                   last_used: LastUsed | None = None) -> User | None:
    """The owner of a live API token, else None. Its use is noted in `last_used` (memory,
    written in batches), never written here: reads must not write."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked:
        return None
    if last_used is not None:
        last_used.token(row.id)
    return row.user


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The user if the password matches (same work whether or not the user exists)."""
    user = session.scalar(select(User).where(User.username == username.strip()))
    if not verify_password(user.password_hash if user else None, password) or user is None:
        return None
    if needs_rehash(user.password_hash):  # parameters got stronger since it was hashed
        user.password_hash = hash_password(password)
    return user


def db_session(request: Request):
    with request.app.state.db.session() as session:
        yield session


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value:
        raise HTTPException(401, "Missing API token: send 'Authorization: Bearer <token>' "
                                 "(the client reads it from the dask config overcast.token).")
    return value.strip()


def current_user(request: Request, session: Session = Depends(db_session)) -> User:
    user = user_for_token(session, bearer(request), request.app.state.last_used)
    if user is None:
        raise HTTPException(401, "Invalid or revoked API token: run `overcast login` "
                                 "or `overcast up` to get a new one.")
    return user


@dataclass
class AccountAccess:
    account: Account
    role: str
    user: User


def account_access(slug: str, user: User, session: Session) -> AccountAccess:
    """The account, if the user belongs to it; 404 otherwise so outsiders learn nothing."""
    row = session.execute(
        select(Account, Membership.role)
        .join(Membership, Membership.account_id == Account.id)
        .where(Account.slug == slug, Membership.user_id == user.id)
    ).first()
    if row is None:
        raise HTTPException(404, f"No account {slug!r} among yours.")
    return AccountAccess(account=row[0], role=row[1], user=user)


def member_of(slug: str, user: User = Depends(current_user),
              session: Session = Depends(db_session)) -> AccountAccess:
    return account_access(slug, user, session)


def admin_of(access: AccountAccess = Depends(member_of)) -> AccountAccess:
    if access.role != "admin":
        raise HTTPException(403, f"Only admins of {access.account.slug!r} may do this; "
                                 f"ask one of them.")
    return access


def principal_in(db, token: str):
    """`principal_for_token` in a session of its own (the list fast path's lane thread)."""
    with db.session() as session:
        return principal_for_token(session, token)


def principal_for_token(session: Session, token: str):
    """Who a live token speaks for, and their accounts (overcast.server.tokencache), else
    None. Same check as `user_for_token`, plus the memberships in one more query."""
    from overcast.server.tokencache import Principal

    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked:
        return None
    accounts = session.execute(select(Account.slug, Account.id)
                               .join(Membership, Membership.account_id == Account.id)
                               .where(Membership.user_id == row.user_id)).all()
    return Principal(token_id=row.id, user_id=row.user_id,
                     accounts={slug: account_id for slug, account_id in accounts})
