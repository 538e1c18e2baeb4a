"""Password hashing: argon2id through pwdlib, off the event loop (one hash costs ~0.1 s of CPU)."""

from __future__ import annotations

import asyncio
import secrets
import unicodedata
from functools import cache

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

_HASHER = PasswordHash((Argon2Hasher(),))


def _canonical(password: str) -> str:
    # The same password typed on another keyboard or OS may arrive composed differently.
    return unicodedata.normalize("NFKC", password)


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_HASHER.hash, _canonical(password))


@cache
def _stand_in_hash() -> str:
    return _HASHER.hash(secrets.token_urlsafe(32))


def _matches(password: str, password_hash: str | None) -> bool:
    return (
        _HASHER.verify(_canonical(password), password_hash or _stand_in_hash()) and password_hash is not None
    )


async def verify_password(password: str, password_hash: str | None) -> bool:
    """Whether the password matches; without a hash (no such user) it costs the same and fails,
    so answering time does not tell which addresses have accounts."""
    return await asyncio.to_thread(_matches, password, password_hash)
