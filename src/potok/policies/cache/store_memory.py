"""The memory store: an LRU bounded by bytes, one per route per worker.

Keyed by the primary cache key (host, path, query); each key holds its variants
(Vary, identity), newest first. Eviction drops whole keys, least recently used first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from potok.policies.cache.stored import StoredResponse, VaryKey

# Variants kept per key: a Vary on a field clients send freely (User-Agent) must not let
# one URI fill the store.
MAX_VARIANTS = 32


class MemoryStore:
    """Stored responses by key; `used` counts their bytes, never above `max_bytes`."""

    __slots__ = ("_entries", "evictions", "max_bytes", "on_evict", "used")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self.evictions = 0
        self._entries: OrderedDict[bytes, list[StoredResponse]] = OrderedDict()
        self.on_evict: Callable[[int], None] | None = None

    def __len__(self) -> int:
        return sum(len(variants) for variants in self._entries.values())

    def select(
        self, key: bytes, vary: Callable[[tuple[bytes, ...]], VaryKey], identity: str | None
    ) -> tuple[StoredResponse | None, bool]:
        """The newest variant of `key` this request selects, and whether the key has any
        variant at all (a vary-miss rather than a uri-miss)."""
        variants = self._entries.get(key)
        if variants is None:
            return None, False
        self._entries.move_to_end(key)
        for entry in variants:
            if entry.identity == identity and entry.vary == vary(
                tuple(name for name, _ in entry.vary)
            ):
                return entry, True
        return None, True

    def put(self, key: bytes, entry: StoredResponse) -> bool:
        """Store `entry`, replacing the variant it is the new version of. False if it is
        larger than the whole store."""
        if entry.size > self.max_bytes:
            return False
        variants = self._entries.get(key)
        if variants is None:
            variants = self._entries[key] = []
        else:
            self._entries.move_to_end(key)
            names = tuple(name for name, _ in entry.vary)
            for old in [v for v in variants if _same_variant(v, entry, names)]:
                variants.remove(old)
                self.used -= old.size
        variants.insert(0, entry)
        self.used += entry.size
        while len(variants) > MAX_VARIANTS:
            self.used -= variants.pop().size
        self._evict()
        return True

    def replace(self, key: bytes, old: StoredResponse, new: StoredResponse) -> None:
        """`new` in `old`'s place (a revalidation's updated headers)."""
        variants = self._entries.get(key)
        if variants is not None and old in variants:
            variants.remove(old)
            self.used -= old.size
        self.put(key, new)

    def remove(self, key: bytes) -> int:
        """Forget every variant of `key`; how many there were."""
        variants = self._entries.pop(key, None)
        if not variants:
            return 0
        self.used -= sum(v.size for v in variants)
        return len(variants)

    def remove_where(self, keep: Callable[[bytes, StoredResponse], bool]) -> int:
        """Forget every entry `keep` says no to (purges by prefix or tag: a scan, off the
        request path)."""
        removed = 0
        for key in list(self._entries):
            variants = self._entries[key]
            kept = [v for v in variants if keep(key, v)]
            if len(kept) != len(variants):
                removed += len(variants) - len(kept)
                self.used -= sum(v.size for v in variants if v not in kept)
                if kept:
                    self._entries[key] = kept
                else:
                    del self._entries[key]
        return removed

    def clear(self) -> int:
        count = len(self)
        self._entries.clear()
        self.used = 0
        return count

    def _evict(self) -> None:
        entries = self._entries
        while self.used > self.max_bytes and entries:
            _, variants = entries.popitem(last=False)
            self.used -= sum(v.size for v in variants)
            self.evictions += len(variants)
            if self.on_evict is not None:
                self.on_evict(len(variants))


def _same_variant(old: StoredResponse, new: StoredResponse, names: tuple[bytes, ...]) -> bool:
    old_names = tuple(name for name, _ in old.vary)
    return old.identity == new.identity and (old_names != names or old.vary == new.vary)
