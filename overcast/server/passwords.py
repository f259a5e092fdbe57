"""Password hashing with Argon2id (argon2-cffi's defaults, RFC 9106 low-memory profile)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 8
MAX_LENGTH = 256  # long enough for pass phrases, short enough to bound the hashing cost

_hasher = PasswordHasher()
# Verifying against this when the user does not exist keeps the timing the same, so a
# sign-in form does not tell which usernames exist.
_DUMMY_HASH = _hasher.hash("overcast-no-such-user")


class PasswordError(ValueError):
    """A password that is not acceptable; the message says why."""


def check_strength(password: str) -> str:
    if len(password) < MIN_LENGTH:
        raise PasswordError(f"Use a password of at least {MIN_LENGTH} characters.")
    if len(password) > MAX_LENGTH:
        raise PasswordError(f"Use a password of at most {MAX_LENGTH} characters.")
    return password


def hash_password(password: str) -> str:
    return _hasher.hash(check_strength(password))


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if `password` matches; constant work whether or not there is a hash."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's."""
    return _hasher.check_needs_rehash(password_hash)
