"""Single-flight within a worker (across workers and instances, the Redis store adds a
lock: `store_redis`): while one request fills a key from the upstream, the
others asking for it wait (SUSPENDED in the cache's request hook) and go on when the
fill ends — to the stored answer, or to the upstream themselves if nothing was stored
(an uncacheable answer, an error, the filling client gone). Never longer than `bound`
seconds: like nginx's proxy_cache_lock_timeout, a waiter then goes to the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from potok.exchange import Exchange
    from potok.policies.cache.store_redis import RedisStore
    from potok.policies.cache.stored import StoredResponse

CONTEXT_KEY = "cache.variants"
# With the Redis store: the `Lead` of a request that fills its key (started in the
# request hook, taken over by the response filter).
LEAD_KEY = "cache.lead"

# Waiters per key: past this, more requests go straight to the upstream.
MAX_WAITERS = 10_000


class Fill:
    """One key being filled, and who waits for it."""

    __slots__ = ("timer", "variants", "waiters")

    def __init__(self) -> None:
        self.waiters: list[Exchange] = []
        self.timer: asyncio.TimerHandle | None = None
        # What the fill stored or found: handed to the waiters (a Redis store is not
        # read again).
        self.variants: list[StoredResponse] = []


class Fills:
    """The keys being filled in this worker."""

    __slots__ = ("_bound", "_fills")

    def __init__(self, bound: float) -> None:
        self._bound = bound
        self._fills: dict[bytes, Fill] = {}

    def wait(self, key: bytes, exchange: Exchange) -> bool:
        """Queue `exchange` behind a fill of `key` in progress; False if there is none."""
        fill = self._fills.get(key)
        if fill is None or len(fill.waiters) >= MAX_WAITERS:
            return False
        fill.waiters.append(exchange)
        return True

    def start(self, key: bytes, loop: asyncio.AbstractEventLoop) -> Fill | None:
        """Mark `key` as being filled (None if it already is)."""
        if key in self._fills:
            return None
        fill = self._fills[key] = Fill()
        fill.timer = loop.call_later(self._bound, self.finish, key, fill)
        return fill

    def finish(self, key: bytes, fill: Fill) -> None:
        """The fill ended (or its bound passed): every waiter goes on — in a later
        callback, not inside the filling response's own (which is still sending)."""
        if self._fills.get(key) is fill:
            del self._fills[key]
        if fill.timer is not None:
            fill.timer.cancel()
            fill.timer = None
        if fill.waiters:
            asyncio.get_running_loop().call_soon(self._resume, fill)

    @staticmethod
    def _resume(fill: Fill) -> None:
        waiters, fill.waiters = fill.waiters, []
        variants = fill.variants
        for exchange in waiters:
            if variants:
                if exchange.context is None:
                    exchange.context = {}
                exchange.context[CONTEXT_KEY] = variants
            exchange.resume()


class Lead:
    """A request leading the fill of a key with the Redis store: its worker's `Fill` and,
    once taken, the Redis lock's token. The response filter takes both over (`take`) or
    settles them (`settle`); a request that ends before either — its client left between
    the request hook and the upstream stage, a later hook refused it — settles them
    when it is dropped, so nobody waits out `lock_timeout` behind it."""

    __slots__ = ("fill", "fills", "key", "lock", "redis")

    def __init__(self, fills: Fills, key: bytes, fill: Fill, redis: RedisStore) -> None:
        self.fills = fills
        self.key = key
        self.fill: Fill | None = fill
        self.redis = redis
        self.lock: bytes | None = None

    def take(self) -> tuple[Fill | None, bytes | None]:
        fill, lock = self.fill, self.lock
        self.fill = self.lock = None
        return fill, lock

    def settle(self, variants: list[StoredResponse]) -> None:
        """Waiters of this worker go on with `variants`; the lock is given up."""
        fill, lock = self.take()
        if fill is not None:
            fill.variants = variants
            self.fills.finish(self.key, fill)
        if lock is not None:
            self.redis.release(self.key, lock)

    def __del__(self) -> None:
        if self.fill is not None or self.lock is not None:
            with contextlib.suppress(RuntimeError):  # no running loop: shutting down
                self.settle([])
