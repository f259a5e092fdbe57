"""Encryption at rest for secrets in the database (AWS keys, TLS keys): Fernet, one key."""

from __future__ import annotations

import os
import threading
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
        # Created on first use, readable by the server's user only. Written whole to a file
        # of our own, then linked into place: concurrent first uses (threads, processes) never
        # read a half-written key, and the first link wins.
        tmp = p.with_name(f".{p.name}.{os.getpid()}.{threading.get_ident()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key())
        try:
            os.link(tmp, p)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return Fernet(p.read_bytes().strip())


def encrypt(plaintext: str) -> str:
    return _fernet(str(key_path())).encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    return _fernet(str(key_path())).decrypt(token.encode()).decode()
