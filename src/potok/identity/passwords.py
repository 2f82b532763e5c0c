"""argon2id password hashing, off the event loop and bounded in concurrency.

Unknown usernames are checked against a dummy hash made with the same
parameters, so "no such user" and "wrong password" take the same time.
"""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from potok.identity.config import PasswordHashingConfig

MIN_PASSWORD = 8
MAX_PASSWORD = 1024


class PasswordError(Exception):
    """A password that may not be set, with the reason."""


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise PasswordError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise PasswordError(f"a password has at most {MAX_PASSWORD} characters")
    return password


class PasswordHasher:
    def __init__(self, config: PasswordHashingConfig) -> None:
        self._hasher = Argon2Hasher(
            time_cost=config.time_cost,
            memory_cost=config.memory_kib,
            parallelism=config.parallelism,
            type=Type.ID,
        )
        self._slots = asyncio.Semaphore(config.concurrency)
        self._dummy: str | None = None

    def hash_now(self, password: str) -> str:
        """Hash in this thread (CLI use)."""
        return self._hasher.hash(check_password(password))

    async def hash(self, password: str) -> str:
        check_password(password)
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """True if `password` matches `stored`; with `stored` None, the same work, then False."""
        if len(password) > MAX_PASSWORD:
            password = password[:MAX_PASSWORD]
        async with self._slots:
            if stored is None:
                await asyncio.to_thread(self._verify, self._dummy_hash(), password)
                return False
            return await asyncio.to_thread(self._verify, stored, password)

    def needs_rehash(self, stored: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
        return self._dummy

    async def warm_up(self) -> None:
        """Make the dummy hash before the first login, so the first unknown user costs the same."""
        await asyncio.to_thread(self._dummy_hash)
