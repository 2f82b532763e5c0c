"""Which keys a limit refuses most: a bounded space-saving sketch, fed only by refusals.

Admitted requests never touch it, so the data plane pays nothing while under quota; a
refusal (already the slow path: it builds a 429) adds one dict update, and a new key
in a full sketch one scan of `CAPACITY` counts. Space-saving (Metwally et al., 2005)
keeps the heaviest keys exactly enough: a reported count is at most `error` too high,
and any key refused more than total/CAPACITY times is in the sketch.

Counts cover the current and the previous generation (each `GENERATION` seconds), so
the list shows who is being limited now, not who was an hour ago. Each worker keeps its
own; the admin API adds the workers' counts up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CAPACITY = 32
GENERATION = 60.0


class RefusedKeys:
    """The sketch of one limit in one scope (shared by the routes that share its counters)."""

    __slots__ = ("_counts", "_errors", "_previous", "_rotate_at", "info", "routes", "total")

    def __init__(self, info: LimitInfo) -> None:
        self.info = info
        self.routes: set[str] = set()
        self.total = 0
        self._counts: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        self._previous: dict[str, int] = {}
        self._rotate_at = 0.0

    def add(self, key: str, now: float) -> None:
        """Count one refusal of `key` at monotonic time `now` (the request's arrival)."""
        if now >= self._rotate_at:
            self._rotate(now)
        self.total += 1
        counts = self._counts
        count = counts.get(key)
        if count is not None:
            counts[key] = count + 1
            return
        if len(counts) < CAPACITY:
            counts[key] = 1
            self._errors[key] = 0
            return
        victim = min(counts, key=counts.__getitem__)
        floor = counts.pop(victim)
        del self._errors[victim]
        counts[key] = floor + 1
        self._errors[key] = floor

    def _rotate(self, now: float) -> None:
        stale = now - self._rotate_at >= GENERATION  # nothing refused for a whole generation
        self._previous = {} if stale else self._counts
        self._counts = {}
        self._errors = {}
        self._rotate_at = now + GENERATION

    def top(self, limit: int = 10) -> list[tuple[str, int, int]]:
        """(key, refusals, possible overcount), most refused first, over about the last one
        to two generations."""
        merged = dict(self._previous)
        for key, count in self._counts.items():
            merged[key] = merged.get(key, 0) + count
        ranked = sorted(merged.items(), key=lambda item: (-item[1], item[0]))[:limit]
        return [(key, count, self._errors.get(key, 0)) for key, count in ranked]


@dataclass(frozen=True, slots=True)
class LimitInfo:
    """What the admin API says about a limit besides its counts."""

    scope: str
    label: str
    limit: int
    window: float
    algorithm: str
    key: str
    store: str


@dataclass
class RefusedRegistry:
    """Every limit's sketch in this worker, by counter name (a worker resource: reloads
    keep the counts of limits that stay)."""

    sketches: dict[str, RefusedKeys] = field(default_factory=dict)

    def sketch(self, name: str, info: LimitInfo, route: str) -> RefusedKeys:
        sketch = self.sketches.get(name)
        if sketch is None or sketch.info != info:
            sketch = self.sketches[name] = RefusedKeys(info)
        sketch.routes.add(route)
        return sketch


RESOURCE_KEY = "rate_limit:refused"
