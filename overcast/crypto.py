"""Encryption at rest for secrets in the database (AWS keys, TLS keys): Fernet, one key."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet

from overcast import settings


def key_path() -> Path:
    return settings.home() / "secret.key"


@lru_cache(maxsize=4)
def _fernet(path: str) -> Fernet:
    p = Path(path)
    if not p.exists():
        # Created on first start, readable by the server's user only.
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key())
    return Fernet(p.read_bytes().strip())


def encrypt(plaintext: str) -> str:
    return _fernet(str(key_path())).encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    return _fernet(str(key_path())).decrypt(token.encode()).decode()
