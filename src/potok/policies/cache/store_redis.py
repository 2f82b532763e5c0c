"""The Redis store: entries shared by every worker and instance.

A primary key is one Redis hash (`<prefix>e:<key>`) whose fields are its variants (by
caller and Vary values); each value is a 4-byte length, a JSON head and the body. Tags
are sets of keys (`<prefix>t:<tag>`). Lookups wait in the cache's request hook (a
future), never in the response path. Redis being down is never an error: a failed or
slow lookup is a miss (the upstream answers), a failed write is dropped, and after a
failure Redis is left alone for `_BACKOFF` seconds so requests do not each pay a timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
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
        entries = []
        for blob in found.values():
            entry = self._decode(blob if isinstance(blob, bytes) else blob.encode("latin-1"))
            if entry is not None:
                entries.append(entry)
        entries.sort(key=lambda e: e.response_time, reverse=True)
        return entries

    def put(self, key: bytes, entry: StoredResponse) -> bool:
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
        self._spawn(
            "store", self._put(key, _variant_id(entry), self._encode(entry), keep, entry.tags)
        )
        return True

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
