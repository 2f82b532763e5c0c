"""The usable API keys, mirrored in each worker: a request is checked without any I/O.

The mirror reloads the table every `sync_interval` (revoked and expired keys
drop out), and writes last-used times in one batch every `last_used_flush`
instead of a write per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from potok.identity.api_keys import ApiKey, ApiKeyStore, parse_key, secret_hash
from potok.identity.principal import Principal

if TYPE_CHECKING:
    from potok.identity.config import ApiKeysConfig
    from potok.identity.forwarding import IdentityHeaders

log = structlog.get_logger("potok.identity.api_keys")


class ApiKeyMirror:
    def __init__(
        self,
        config: ApiKeysConfig,
        store: ApiKeyStore,
        headers: IdentityHeaders,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.headers = headers
        self._clock = clock
        self._keys: dict[str, tuple[ApiKey, Principal]] = {}
        self._last_used: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.loaded = False

    def load(self, keys: list[ApiKey]) -> None:
        self._keys = {key.id: (key, self._principal(key)) for key in keys}
        self.loaded = True

    def _principal(self, key: ApiKey) -> Principal:
        subject = f"key:{key.id}"
        return Principal(
            subject=subject,
            kind="api_key",
            roles=frozenset(key.roles),
            scopes=frozenset(key.scopes),
            org=key.org,
            token_id=None,
            issued_at=key.created_at,
            expires_at=key.expires_at,
            upstream_lines=self.headers.build(subject, key.roles, key.scopes, key.org),
        )

    def authenticate(self, presented: str) -> Principal | None:
        """The key's principal, or None for a malformed, unknown, revoked or expired key."""
        parsed = parse_key(presented)
        if parsed is None:
            return None
        key_id, secret = parsed
        entry = self._keys.get(key_id)
        if entry is None:
            return None
        key, principal = entry
        if not hmac.compare_digest(secret_hash(secret), key.secret_hash):
            return None
        now = self._clock()
        if not key.usable_at(now):
            return None
        self._last_used[key_id] = now
        return principal

    async def sync(self) -> None:
        self.load(await self.store.usable(self._clock()))

    async def flush_last_used(self) -> None:
        pending, self._last_used = self._last_used, {}
        try:
            await self.store.record_use(pending)
        except Exception as exc:
            log.warning("recording API key use failed", error=str(exc))

    async def start(self) -> None:
        await self.sync()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._every(self.config.sync_interval, self.sync)))
        self._tasks.append(
            loop.create_task(self._every(self.config.last_used_flush, self.flush_last_used))
        )

    async def _every(self, interval: float, action: Callable[[], object]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await action()  # type: ignore[misc]
            except Exception as exc:
                log.warning("API key mirror task failed", error=str(exc))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.flush_last_used()
