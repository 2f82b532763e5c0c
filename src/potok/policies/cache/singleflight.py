"""Single-flight within a worker (across workers and instances, the Redis store adds a
lock: `store_redis`): while one request fills a key from the upstream, the
others asking for it wait (SUSPENDED in the cache's request hook) and go on when the
fill ends — to the stored answer, or to the upstream themselves if nothing was stored
(an uncacheable answer, an error, the filling client gone). Never longer than `bound`
seconds: like nginx's proxy_cache_lock_timeout, a waiter then goes to the upstream.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from potok.exchange import Exchange
    from potok.policies.cache.stored import StoredResponse

CONTEXT_KEY = "cache.variants"
# With the Redis store: the Fill this request leads (started in the request hook) and
# the Redis lock token it holds.
FILL_KEY = "cache.fill"
LOCK_KEY = "cache.lock"

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
