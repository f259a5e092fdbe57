"""Users, team accounts and their members. Admins of an account manage its members."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from overcast.server import bootstrap
from overcast.server.auth import AccountAccess, admin_of, current_user, db_session, member_of
from overcast.server.passwords import PasswordError, hash_password, verify_password
from overcast.store.models import Account, Membership, User

router = APIRouter(tags=["accounts"])


class NewUser(BaseModel):
    username: str
    password: str


class PasswordChange(BaseModel):
    current_password: str | None = None
    new_password: str


class NewTeam(BaseModel):
    name: str


class MemberIn(BaseModel):
    username: str
    role: str = "member"


class RoleIn(BaseModel):
    role: str


def account_view(account: Account, role: str) -> dict:
    return {"slug": account.slug, "is_team": account.is_team, "role": role}


def members_view(account: Account) -> list[dict]:
    return sorted(({"username": m.user.username, "role": m.role} for m in account.memberships),
                  key=lambda m: (m["role"] != "admin", m["username"]))


def bad_input(exc: Exception) -> HTTPException:
    return HTTPException(400, str(exc))


@router.post("/users", status_code=201)
def create_user(body: NewUser, user: User = Depends(current_user),
                session: Session = Depends(db_session)) -> dict:
    """Make a user (and their personal account): site administrators only."""
    if not user.is_admin:
        raise HTTPException(403, "Only site administrators may create users.")
    try:
        new = bootstrap.create_user(session, bootstrap.check_username(body.username),
                                    password=body.password)
    except (bootstrap.AccountError, PasswordError) as exc:
        raise bad_input(exc) from None
    return {"username": new.username, "default_account": session.get(
        Account, new.default_account_id).slug}


@router.put("/me/password", status_code=204)
def change_password(body: PasswordChange, user: User = Depends(current_user)) -> Response:
    # A user made by `overcast up` has no password yet: their API token is proof enough.
    if user.password_hash and not verify_password(user.password_hash,
                                                  body.current_password or ""):
        raise HTTPException(400, "The current password is wrong.")
    try:
        user.password_hash = hash_password(body.new_password)
    except PasswordError as exc:
        raise bad_input(exc) from None
    return Response(status_code=204)


@router.get("/accounts")
def my_accounts(user: User = Depends(current_user)) -> list[dict]:
    return [account_view(m.account, m.role) for m in user.memberships]


@router.post("/teams", status_code=201)
def create_team(body: NewTeam, user: User = Depends(current_user),
                session: Session = Depends(db_session)) -> dict:
    try:
        team = bootstrap.create_team(session, user, body.name)
    except bootstrap.AccountError as exc:
        raise bad_input(exc) from None
    return account_view(team, "admin")


@router.get("/accounts/{slug}")
def get_account(access: AccountAccess = Depends(member_of)) -> dict:
    return {**account_view(access.account, access.role),
            "members": members_view(access.account)}


@router.get("/accounts/{slug}/members")
def list_members(access: AccountAccess = Depends(member_of)) -> list[dict]:
    return members_view(access.account)


@router.post("/accounts/{slug}/members", status_code=201)
def add_member(body: MemberIn, access: AccountAccess = Depends(admin_of),
               session: Session = Depends(db_session)) -> dict:
    try:
        row = bootstrap.add_member(session, access.account, body.username, body.role)
    except bootstrap.AccountError as exc:
        raise bad_input(exc) from None
    return {"username": row.user.username, "role": row.role}


@router.put("/accounts/{slug}/members/{username}")
def set_role(username: str, body: RoleIn, access: AccountAccess = Depends(admin_of),
             session: Session = Depends(db_session)) -> dict:
    existing = session.scalar(select(Membership).join(User, User.id == Membership.user_id)
                              .where(Membership.account_id == access.account.id,
                                     User.username == username))
    if existing is None:
        raise HTTPException(404, f"{username!r} is not a member of {access.account.slug!r}.")
    try:
        row = bootstrap.add_member(session, access.account, username, body.role)
    except bootstrap.AccountError as exc:
        raise bad_input(exc) from None
    return {"username": row.user.username, "role": row.role}


@router.delete("/accounts/{slug}/members/{username}", status_code=204)
def remove_member(username: str, access: AccountAccess = Depends(admin_of),
                  session: Session = Depends(db_session)) -> Response:
    try:
        bootstrap.remove_member(session, access.account, username)
    except bootstrap.AccountError as exc:
        raise bad_input(exc) from None
    return Response(status_code=204)
