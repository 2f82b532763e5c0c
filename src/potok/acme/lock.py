"""One instance orders at a time: the lock each storage offers, and a Redis lease.

An order takes seconds to minutes (the CA validates, then issues); two instances
ordering the same names at once would both succeed, double the CA's rate-limit cost
and race to store. Whoever holds the lock orders; the others wait, then find the new
certificate in storage and only install it.

- PostgreSQL: a session advisory lock on a connection held for the order. The server
  drops it if the instance dies, so a crash never leaves it taken.
- SQLite or a directory: `flock` on a lock file (one host; the kernel drops it with the
  process).
- Redis (`acme.lock: redis`): `SET key token NX PX ttl`, extended while held, released
  only by its holder (compare-and-delete in one script), so a lease that expired under a
  stalled holder is never deleted from under its next owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import text

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

POLL = 0.25  # how often a waiter tries again: orders are rare, a quarter second is plenty
# pg advisory locks take a bigint; this one is "potok-acme"'s, apart from the migrations'.
PG_LOCK_KEY = 0x706F746F6B6163


class LockBusy(Exception):
    """Another instance kept the lock for longer than we were willing to wait."""


class OrderLock(Protocol):
    async def try_acquire(self) -> bool:
        """Take the lock if it is free; never waits."""
        ...

    async def release(self) -> None: ...

    async def close(self) -> None:
        """Release if held and let go of connections (the manager stops)."""
        ...


@contextlib.asynccontextmanager
async def holding(lock: OrderLock, wait: float) -> AsyncIterator[None]:
    """Hold `lock` for the block, waiting up to `wait` seconds for it (LockBusy past that)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while not await lock.try_acquire():
        if loop.time() >= deadline:
            raise LockBusy("another instance is ordering")
        await asyncio.sleep(POLL)
    try:
        yield
    finally:
        await lock.release()


class FileLock:
    """`flock` on a file: exclusive between processes, and between two opens in one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    async def try_acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    async def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    async def close(self) -> None:
        await self.release()


class PostgresAdvisoryLock:
    """A session-level advisory lock on a connection kept for as long as it is held."""

    def __init__(self, engine: AsyncEngine, key: int = PG_LOCK_KEY) -> None:
        self.engine = engine
        self.key = key
        self._connection: AsyncConnection | None = None

    async def try_acquire(self) -> bool:
        connection = await self.engine.connect()
        try:
            row = await connection.execute(text(f"SELECT pg_try_advisory_lock({self.key})"))
            taken = bool(row.scalar())
            await connection.commit()
        except BaseException:
            await connection.close()
            raise
        if not taken:
            await connection.close()
            return False
        self._connection = connection
        return True

    async def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            await connection.execute(text(f"SELECT pg_advisory_unlock({self.key})"))
            await connection.commit()
        except Exception:
            # The unlock failed: end the session (and the lock with it) rather than return
            # a connection that still holds it to the pool.
            await connection.invalidate()
            raise
        finally:
            await connection.close()

    async def close(self) -> None:
        await self.release()


_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
_EXTEND = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)


class RedisLock:
    """A lease in Redis with a random token; extended every ttl/3 while held."""

    def __init__(self, client: Redis, key: str, ttl: float = 30.0) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = int(ttl * 1000)
        self._token: str | None = None
        self._keeper: asyncio.Task[None] | None = None

    async def try_acquire(self) -> bool:
        token = secrets.token_hex(16)
        if not await self.client.set(self.key, token, nx=True, px=self.ttl_ms):
            return False
        self._token = token
        self._keeper = asyncio.get_running_loop().create_task(self._keep(token))
        return True

    async def _keep(self, token: str) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            extended = await self.client.eval(_EXTEND, 1, self.key, token, self.ttl_ms)
            if not extended:
                return  # lost (expired while we stalled): the next holder's now

    async def release(self) -> None:
        token, self._token = self._token, None
        if self._keeper is not None:
            self._keeper.cancel()
            self._keeper = None
        if token is not None:
            await self.client.eval(_RELEASE, 1, self.key, token)

    async def close(self) -> None:
        await self.release()
        await self.client.aclose()
