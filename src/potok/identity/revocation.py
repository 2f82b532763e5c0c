"""Revoked access tokens: a denylist every worker keeps in memory, fed from the database.

The hot path asks `Denylist.is_revoked` (two dict lookups, no I/O). Revocations
are written to the database, which is the source of truth; each worker reads
new rows every `poll_interval`, and with the Redis backend every revocation is
also published so all gateways apply it at once, through the gateway's shared
`redis:` section (the one rate limiting uses) unless `redis_url` overrides it.
Two kinds:

- `jti`: one access token (logout, a reused refresh family), until it expires;
- `subject`: every token of a user issued before the revocation (disabled user).

A token's `iat` is whole seconds, so a `subject` revocation is recorded at whole
seconds too, rounded up (`cut`): a token is revoked when its `iat` is before the
cut. Every token issued before the revocation has an earlier `iat`; a token the
token service issues after it is given an `iat` of at least the cut (see
`Revocations.subject_cut`), so a login right after a password change works. A
token from another issuer in that same second stays refused (the safe side).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import delete, func, select

from potok.identity.schema import revocations
from potok.redis_clients import redis_client

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from potok.config.redis import RedisConfig
    from potok.identity.config import RevocationConfig
    from potok.identity.database import Database

log = structlog.get_logger("potok.identity.revocation")

JTI = "jti"
SUBJECT = "subject"


class Denylist:
    """In-memory revocations; entries leave once the tokens they stop have expired."""

    __slots__ = ("_clock", "_jti", "_subjects", "generation")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._jti: dict[str, float] = {}  # jti -> when the token expires
        self._subjects: dict[str, tuple[float, float]] = {}  # sub -> (revoked_at, expires_at)
        self._clock = clock
        # Goes up with every entry added: a caller that found a token not revoked at
        # generation N need not ask again while the generation is still N.
        self.generation = 0

    def add(self, kind: str, value: str, revoked_at: float, expires_at: float) -> None:
        self.generation += 1
        if kind == JTI:
            self._jti[value] = max(expires_at, self._jti.get(value, 0.0))
        elif kind == SUBJECT:
            previous = self._subjects.get(value)
            if previous is None or previous[0] < revoked_at:
                self._subjects[value] = (revoked_at, expires_at)

    def is_revoked(self, jti: str | None, subject: str, issued_at: float) -> bool:
        if jti is not None and jti in self._jti:
            return True
        entry = self._subjects.get(subject)
        return entry is not None and issued_at < entry[0]

    def subject_cut(self, subject: str) -> float | None:
        """The latest revocation of every token of `subject`: tokens issued before it are dead."""
        entry = self._subjects.get(subject)
        return entry[0] if entry is not None else None

    def purge(self) -> None:
        now = self._clock()
        self._jti = {k: v for k, v in self._jti.items() if v > now}
        self._subjects = {k: v for k, v in self._subjects.items() if v[1] > now}

    def __len__(self) -> int:
        return len(self._jti) + len(self._subjects)


def revocation_time(kind: str, now: float) -> float:
    """When a revocation takes effect: `subject` cuts at whole seconds (rounded up), like `iat`."""
    return float(math.ceil(now)) if kind == SUBJECT else now


class RevocationStore:
    """The revocations table: append-only, read by id so each worker reads only what is new."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def add(self, kind: str, value: str, expires_at: float) -> tuple[float, float]:
        now = revocation_time(kind, time.time())
        async with self._db.engine.begin() as conn:
            await conn.execute(
                revocations.insert().values(
                    kind=kind, value=value, revoked_at=now, expires_at=expires_at
                )
            )
        return now, expires_at

    async def since(self, last_id: int) -> list[tuple[int, str, str, float, float]]:
        query = (
            select(
                revocations.c.id,
                revocations.c.kind,
                revocations.c.value,
                revocations.c.revoked_at,
                revocations.c.expires_at,
            )
            .where(revocations.c.id > last_id, revocations.c.expires_at > time.time())
            .order_by(revocations.c.id)
        )
        async with self._db.engine.connect() as conn:
            return [(r[0], r[1], r[2], r[3], r[4]) for r in await conn.execute(query)]

    async def subject_cut(self, subject: str) -> float | None:
        """The latest `subject` revocation of this user still in force, from the database."""
        query = select(func.max(revocations.c.revoked_at)).where(
            revocations.c.kind == SUBJECT,
            revocations.c.value == subject,
            revocations.c.expires_at > time.time(),
        )
        async with self._db.engine.connect() as conn:
            value = (await conn.execute(query)).scalar()
        return float(value) if value is not None else None

    async def purge(self) -> int:
        async with self._db.engine.begin() as conn:
            result = await conn.execute(
                delete(revocations).where(revocations.c.expires_at <= time.time())
            )
            return int(result.rowcount or 0)


class Revocations:
    """Revoke (database + publish) and keep this worker's denylist current."""

    def __init__(
        self,
        config: RevocationConfig,
        store: RevocationStore | None,
        denylist: Denylist,
        shared_redis: RedisConfig | None = None,
    ) -> None:
        """`shared_redis` is the gateway's top-level `redis:` section, used by backend 'redis'
        unless the config's own `redis_url` is set."""
        self.config = config
        self.store = store
        self.denylist = denylist
        self._shared_redis = shared_redis
        self._last_id = 0
        self._redis: Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def channel(self) -> str:
        prefix = self.config.redis_prefix
        if prefix is None:
            shared = self._shared_redis
            prefix = (shared.key_prefix if shared is not None else "potok:") + "revoked:"
        return prefix + "events"

    @property
    def redis_url(self) -> str:
        """The Redis of backend 'redis': `redis_url`, else the shared `redis:` section."""
        if self.config.redis_url is not None:
            return self.config.redis_url
        if self._shared_redis is None:
            # GatewayConfig refuses this; a hand-built RevocationConfig may not.
            raise ValueError(
                "auth.revocation.redis_url: backend 'redis' needs the top-level `redis:` "
                "section or 'redis_url'"
            )
        return self._shared_redis.url

    async def start(self) -> None:
        await self.poll()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._poll_forever()))
        if self.config.backend == "redis":
            # The own URL, if given, with the `redis:` section's other settings.
            self._redis = redis_client(self._shared_redis, self.redis_url)
            self._tasks.append(loop.create_task(self._subscribe(self._redis)))

    async def revoke(self, kind: str, value: str, expires_at: float) -> None:
        """Stop a token (`jti`) or every earlier token of a user (`subject`), everywhere."""
        revoked_at = revocation_time(kind, time.time())
        if self.store is not None:
            revoked_at, _ = await self.store.add(kind, value, expires_at)
        self.denylist.add(kind, value, revoked_at, expires_at)
        if self._redis is not None:
            try:
                await self._redis.publish(
                    self.channel, f"{kind}\t{value}\t{revoked_at!r}\t{expires_at!r}"
                )
            except Exception as exc:  # the database poll still carries it
                log.warning("publishing a revocation failed", error=str(exc))

    async def subject_cut(self, subject: str) -> float | None:
        """The cut of the user's latest revocation, read from the database (another process, a
        CLI `set-password`, may have written it since this worker's last poll)."""
        known = self.denylist.subject_cut(subject)
        stored = await self.store.subject_cut(subject) if self.store is not None else None
        cuts = [c for c in (known, stored) if c is not None]
        return max(cuts) if cuts else None

    async def poll(self) -> None:
        if self.store is None:
            return
        for row_id, kind, value, revoked_at, expires_at in await self.store.since(self._last_id):
            self.denylist.add(kind, value, revoked_at, expires_at)
            self._last_id = row_id

    async def _poll_forever(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(self.config.poll_interval)
            try:
                await self.poll()
                rounds += 1
                if rounds % 600 == 0:
                    self.denylist.purge()
            except Exception as exc:
                log.warning("reading revocations failed", error=str(exc))

    async def _subscribe(self, client: Redis) -> None:
        while True:
            try:
                pubsub = client.pubsub()
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    kind, value, revoked_at, expires_at = message["data"].decode().split("\t")
                    self.denylist.add(kind, value, float(revoked_at), float(expires_at))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("redis revocation channel failed; retrying", error=str(exc))
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
