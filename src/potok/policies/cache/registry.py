"""A worker's caches by route, for the admin API, purges and the cache gauges.

Kept in the worker's `Resources`, so it outlives a reload like the stores do: a rebuilt
route's cache replaces its predecessor under the same name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from potok.observability.metrics import MetricsRegistry
    from potok.policies.cache.policy import Cache
    from potok.resources import Resources

RESOURCE_KEY = "cache.registry"


class CacheRegistry:
    """The caches of this worker's routes."""

    __slots__ = ("_metrics", "caches")

    def __init__(self) -> None:
        self.caches: dict[str, Cache] = {}
        self._metrics: MetricsRegistry | None = None

    def add(self, cache: Cache, metrics: MetricsRegistry | None) -> None:
        self.caches[cache.route] = cache
        if metrics is not None and self._metrics is not metrics:
            self._metrics = metrics
            metrics.refreshers.append(self._refresh)

    def _refresh(self) -> None:
        """Before a scrape: each route's bytes and entries, as gauges."""
        metrics = self._metrics
        if metrics is None:
            return
        size = metrics.gauge("cache_bytes", "Bytes held by the route's cache.", ("route",))
        entries = metrics.gauge("cache_entries", "Responses held by the route's cache.", ("route",))
        for route, cache in self.caches.items():
            size.set((route,), float(cache.store.used))
            entries.set((route,), float(len(cache.store)))

    def stats(self) -> dict[str, Any]:
        """Per route: counts by result, hit rate, entries and bytes (this worker)."""
        routes: dict[str, Any] = {}
        for route, cache in sorted(self.caches.items()):
            counts = {result: int(cell[0]) for result, cell in cache.counts.items()}
            lookups = counts["hit"] + counts["stale"] + counts["miss"] + counts["revalidated"]
            served = counts["hit"] + counts["stale"] + counts["revalidated"]
            routes[route] = {
                "requests": counts,
                "hit_rate": round(served / lookups, 4) if lookups else None,
                "entries": len(cache.store),
                "bytes": cache.store.used,
                "max_bytes": cache.store.max_bytes,
                "evictions": cache.store.evictions,
            }
            if cache.redis is not None:
                routes[route]["lock_waits"] = int(cache.lock_waits[0])
                routes[route]["lock_timeouts"] = int(cache.lock_timeouts[0])
        return routes

    async def purge(
        self,
        *,
        route: str | None = None,
        key: str | None = None,
        prefix: str | None = None,
        tag: str | None = None,
        shared: bool = True,
        claim: str | None = None,
    ) -> int:
        """Forget entries: all of a route's (or every route's) — or, within that, those
        under an exact key, a key prefix or a tag. How many were forgotten (in this
        worker's memory stores, and in Redis).

        `shared=False` leaves the Redis stores alone (another worker purged them); with
        `claim` (an event id), a Redis store is purged only by the first worker of any
        instance to claim that id for the route."""
        removed = 0
        for name, cache in list(self.caches.items()):
            if route is not None and name != route:
                continue
            redis = cache.redis
            if redis is not None:
                if not shared:
                    continue
                if claim is not None and not await redis.claim(f"{claim}:{name}"):
                    continue
            removed += await cache.purge(key=key, prefix=prefix, tag=tag)
        return removed


def cache_registry(resources: Resources) -> CacheRegistry:
    found: CacheRegistry = resources.get(RESOURCE_KEY, CacheRegistry)
    return found
