"""The Redis store: entries shared by every worker and instance.

A primary key is one Redis hash (`<prefix>e:<key>`) whose fields are its variants (by
caller and Vary values); each value is a 4-byte length, a JSON head and the body. Tags
are sets of keys (`<prefix>t:<tag>`). Lookups wait in the cache's request hook (a
future), never in the response path. Redis being down is never an error: a failed or
slow lookup is a miss (the upstream answers), a failed write is dropped, and after a
failure Redis is left alone for `_BACKOFF` seconds so requests do not each pay a timeout.

Single-flight across workers and instances: a missing key's filler holds a short lock
(`<prefix>l:<key>`, SET NX PX with a random token; released by a script that deletes it
only while it still holds that token, after the entry is written). Others poll the entry
and the lock together until the entry appears, the lock goes without one, or their
bound passes; a holder that dies leaves a lock that expires by itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from potok.policies.cache.freshness import Lifetime, stale_window
from potok.policies.cache.stored import StoredResponse

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from potok.policies.cache.cache_control import Directives

log = structlog.get_logger("potok.cache")

_BACKOFF = 1.0
# How long past its freshness (and stale windows) an entry stays for revalidation.
_KEEP_STALE = 600
_LENGTH = struct.Struct(">I")
# Deletes the lock only if it still holds our token: a holder whose lock expired and was
# taken by another must not release the other's.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# Polls of a waiter: first soon (a fast upstream fills in milliseconds), then less often.
_POLL_FIRST = 0.005
_POLL_MAX = 0.1
# Event ids claimed for a Redis purge, so one event purges Redis once, not once per worker.
_CLAIM_FOR = 300


class LockWait:
    """How a wait for another filler's lock ended."""

    FILLED = "filled"  # the entry appeared
    RELEASED = "released"  # the lock went without an entry: go upstream
    TIMEOUT = "timeout"  # lock_timeout passed
    ERROR = "error"  # Redis failed: go upstream


class RedisStore:
    """Entries in Redis; every method is safe to call while Redis is down."""

    __slots__ = (
        "_client",
        "_directives",
        "_down_until",
        "_prefix",
        "_tasks",
        "_timeout",
        "max_body",
    )

    def __init__(
        self,
        client: Redis,
        prefix: str,
        *,
        max_body: int,
        timeout: float,
        directives: Callable[[list[tuple[bytes, bytes]]], Directives],
    ) -> None:
        self._client = client
        self._prefix = prefix.encode()
        self.max_body = max_body
        self._timeout = timeout
        self._directives = directives
        self._down_until = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, what: str, exc: BaseException) -> None:
        if self.available:
            log.warning("cache redis unavailable", operation=what, error=repr(exc))
        self._down_until = time.monotonic() + _BACKOFF

    async def variants(self, key: bytes) -> list[StoredResponse]:
        """The stored variants of `key` ([] when there are none or Redis fails)."""
        if not self.available:
            return []
        try:
            async with asyncio.timeout(self._timeout):
                found = await self._client.hgetall(self._prefix + b"e:" + key)
        except Exception as exc:  # any Redis or network failure is a miss
            self._failed("lookup", exc)
            return []
        return self.decode_all(found)

    def decode_all(self, found: dict[Any, Any]) -> list[StoredResponse]:
        """A hash's variants, newest first (damaged ones left out)."""
        entries = []
        for blob in found.values():
            entry = self._decode(blob if isinstance(blob, bytes) else blob.encode("latin-1"))
            if entry is not None:
                entries.append(entry)
        entries.sort(key=lambda e: e.response_time, reverse=True)
        return entries

    # Single-flight lock -------------------------------------------------------------

    async def lock(self, key: bytes, hold_for: float) -> bytes | None:
        """A token if this caller now holds the fill lock of `key`, else None (another
        holds it). Raises on a Redis failure (counted as down)."""
        token = os.urandom(12).hex().encode()
        try:
            async with asyncio.timeout(self._timeout):
                taken = await self._client.set(
                    self._prefix + b"l:" + key, token, nx=True, px=max(1, int(hold_for * 1000))
                )
        except Exception as exc:
            self._failed("lock", exc)
            raise
        return token if taken else None

    async def wait_fill(
        self, key: bytes, deadline: float, found: Callable[[list[StoredResponse]], bool]
    ) -> tuple[str, list[StoredResponse]]:
        """Poll until the entry `found` accepts is stored, the lock is gone without it,
        or `deadline` (monotonic) passes. Never raises."""
        name = self._prefix + b"e:" + key
        lock_name = self._prefix + b"l:" + key
        pause = _POLL_FIRST
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return LockWait.TIMEOUT, []
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, _POLL_MAX)
            try:
                async with asyncio.timeout(self._timeout):
                    pipe = self._client.pipeline(transaction=False)
                    pipe.hgetall(name)
                    pipe.exists(lock_name)
                    stored, locked = await pipe.execute()
            except Exception as exc:
                self._failed("lock wait", exc)
                return LockWait.ERROR, []
            variants = self.decode_all(stored) if stored else []
            if variants and found(variants):
                return LockWait.FILLED, variants
            if not locked:
                return LockWait.RELEASED, variants

    def release(self, key: bytes, token: bytes) -> None:
        """Give the lock up (in the background; an expired one is left alone)."""
        self._spawn("unlock", self._release(key, token))

    async def _release(self, key: bytes, token: bytes) -> None:
        await self._client.eval(_RELEASE, 1, self._prefix + b"l:" + key, token)

    async def claim(self, event_id: str) -> bool:
        """Whether this worker is the first to act on `event_id` for this prefix (one
        Redis purge per event, whichever worker of whichever instance gets there)."""
        try:
            async with asyncio.timeout(self._timeout):
                return bool(
                    await self._client.set(
                        self._prefix + b"b:" + event_id.encode(), b"1", nx=True, ex=_CLAIM_FOR
                    )
                )
        except Exception as exc:
            self._failed("claim", exc)
            return False

    # Entries -----------------------------------------------------------------------

    def put(self, key: bytes, entry: StoredResponse, unlock: bytes | None = None) -> bool:
        """Store `entry` in the background; with `unlock`, release the fill lock after
        it is written (waiters then find it)."""
        if len(entry.body) > self.max_body or not self.available:
            return False
        keep = int(
            max(entry.lifetime, 0)
            + max(
                stale_window(entry.directives, b"stale-while-revalidate"),
                stale_window(entry.directives, b"stale-if-error"),
            )
            + _KEEP_STALE
        )
        work = self._put(key, _variant_id(entry), self._encode(entry), keep, entry.tags)
        self._spawn("store", work if unlock is None else self._then_release(work, key, unlock))
        return True

    async def _then_release(self, work: Any, key: bytes, token: bytes) -> None:
        try:
            await work
        finally:
            await self._release(key, token)

    async def _put(
        self, key: bytes, field: bytes, blob: bytes, keep: int, tags: frozenset[str]
    ) -> None:
        name = self._prefix + b"e:" + key
        pipe = self._client.pipeline(transaction=False)
        pipe.hset(name, field, blob)
        pipe.expire(name, keep)
        for tag in tags:
            tag_key = self._prefix + b"t:" + tag.encode()
            pipe.sadd(tag_key, key)
            pipe.expire(tag_key, keep)
        await pipe.execute()

    def remove(self, key: bytes) -> int:
        if self.available:
            self._spawn("invalidate", self._delete([key]))
        return 0  # the count is not known without waiting

    async def _delete(self, keys: list[bytes]) -> None:
        if keys:
            await self._client.delete(*(self._prefix + b"e:" + key for key in keys))

    async def purge(self, *, key: str | None, prefix: str | None, tag: str | None) -> int:
        """Purge by exact key, key prefix (a SCAN), tag, or everything of this prefix."""
        client = self._client
        if key is not None:
            return int(await client.delete(self._prefix + b"e:" + key.encode("latin-1")))
        if tag is not None:
            tag_key = self._prefix + b"t:" + tag.encode()
            keys = [
                k if isinstance(k, bytes) else k.encode("latin-1")
                for k in await client.smembers(tag_key)
            ]
            await client.delete(tag_key)
            return (
                int(await client.delete(*(self._prefix + b"e:" + k for k in keys))) if keys else 0
            )
        pattern = self._prefix + b"e:" + _glob_escape((prefix or "").encode("latin-1")) + b"*"
        removed = 0
        async for name in client.scan_iter(match=pattern, count=500):
            removed += int(await client.delete(name))
        return removed

    def _spawn(self, what: str, work: Any) -> None:
        async def run() -> None:
            try:
                async with asyncio.timeout(self._timeout * 4):
                    await work
            except Exception as exc:
                self._failed(what, exc)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _encode(self, entry: StoredResponse) -> bytes:
        head = orjson.dumps(
            {
                "s": entry.status,
                "r": entry.reason.decode("latin-1"),
                "h": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in entry.headers],
                "l": entry.lifetime,
                "a": entry.initial_age,
                "t": entry.response_time,
                "v": [
                    [n.decode("latin-1"), None if v is None else v.decode("latin-1")]
                    for n, v in entry.vary
                ],
                "i": entry.identity,
                "g": sorted(entry.tags),
            }
        )
        return _LENGTH.pack(len(head)) + head + entry.body

    def _decode(self, blob: bytes) -> StoredResponse | None:
        try:
            (size,) = _LENGTH.unpack_from(blob)
            head = orjson.loads(blob[4 : 4 + size])
            headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in head["h"]]
            return StoredResponse(
                status=head["s"],
                reason=head["r"].encode("latin-1"),
                headers=headers,
                body=blob[4 + size :],
                directives=self._directives(headers),
                lifetime=Lifetime(head["l"], True),
                initial_age=head["a"],
                response_time=head["t"],
                vary=tuple(
                    (n.encode("latin-1"), None if v is None else v.encode("latin-1"))
                    for n, v in head["v"]
                ),
                identity=head["i"],
                tags=frozenset(head["g"]),
            )
        except (struct.error, ValueError, KeyError, TypeError):
            return None  # another version's or a damaged value: a miss


def _variant_id(entry: StoredResponse) -> bytes:
    digest = hashlib.sha1(repr((entry.identity, entry.vary)).encode(), usedforsecurity=False)
    return digest.hexdigest().encode()


def _glob_escape(value: bytes) -> bytes:
    out = bytearray()
    for byte in value:
        if byte in b"*?[]\\":
            out.append(0x5C)
        out.append(byte)
    return bytes(out)
