"""Purges that reach every worker of every instance, over the realtime event bus.

Each worker's realtime service hands every bus event to the worker's
`BusPurger` before its hub. Two kinds of event purge:

- events the `cache.invalidate` rules match: their tags (filled from the channel's
  placeholders and the event's data) are purged in this worker's memory stores, and in
  a Redis store by the first worker to claim the event id there (once, not once per
  worker);
- the gateway's own purge commands on `PURGE_CHANNEL` (the admin API and `potok cache
  purge`): the worker that took the call purged its stores and Redis already; every
  other worker purges its memory stores. Publishers cannot use that channel
  (`events.RESERVED_PREFIX`), and the hub never delivers it to clients.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from potok.policies.cache.bus_config import InvalidateRuleConfig, placeholders
from potok.policies.cache.registry import CacheRegistry, cache_registry
from potok.realtime.events import RESERVED_PREFIX, Event, make_event

if TYPE_CHECKING:
    from potok.observability.metrics import MetricsRegistry
    from potok.realtime.service import Realtime
    from potok.resources import Resources

log = structlog.get_logger("potok.cache")

PURGE_CHANNEL = RESERVED_PREFIX + "cache.purge"
PURGE_TYPE = "cache.purge"
RESOURCE_KEY = "cache.bus_purger"
_NAME = re.compile(r"\{([^{}]+)\}")
# A tag part: a literal, a channel placeholder, or a path into the event's data.
Part = str | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rule:
    regex: re.Pattern[str]
    events: frozenset[str]
    tags: tuple[tuple[Part, ...], ...]
    routes: tuple[str, ...]

    def tags_for(self, event: Event) -> list[str]:
        """The tags `event` purges ([] when the rule does not match it)."""
        if self.events and event.type not in self.events:
            return []
        match = self.regex.match(event.channel)
        if match is None:
            return []
        found: list[str] = []
        for parts in self.tags:
            tag = _fill(parts, match, event.data)
            if tag is not None:
                found.append(tag)
        return found


def compile_rule(config: InvalidateRuleConfig) -> Rule:
    return Rule(
        _channel_regex(config.channel),
        frozenset(config.events),
        tuple(_template(tag, set(placeholders(config.channel))) for tag in config.tags),
        config.routes,
    )


def _channel_regex(pattern: str) -> re.Pattern[str]:
    """`org:{org}:tasks` -> named groups of one segment; `*` one segment, or the rest at
    the end (as the realtime channel rules)."""
    out: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "{":
            end = pattern.index("}", index)
            out.append(f"(?P<{pattern[index + 1 : end]}>[^:]+)")
            index = end + 1
        elif char == "*":
            out.append(".+" if index == len(pattern) - 1 else "[^:]+")
            index += 1
        else:
            out.append(re.escape(char))
            index += 1
    return re.compile("".join(out) + r"\Z")


def _template(tag: str, names: set[str]) -> tuple[Part, ...]:
    """Parts of a tag: "=literal", a channel placeholder's name, or a data path."""
    parts: list[Part] = []
    last = 0
    for match in _NAME.finditer(tag):
        if match.start() > last:
            parts.append("=" + tag[last : match.start()])
        name = match.group(1)
        parts.append(name if name in names else tuple(name.split(".")))
        last = match.end()
    if last < len(tag):
        parts.append("=" + tag[last:])
    return tuple(parts)


def _fill(parts: tuple[Part, ...], match: re.Match[str], data: Any) -> str | None:
    out: list[str] = []
    for part in parts:
        if isinstance(part, tuple):
            value = data
            for step in part[1:]:  # part[0] is "data"
                if not isinstance(value, dict) or step not in value:
                    return None
                value = value[step]
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                return None
            out.append(str(value))
        elif part.startswith("="):
            out.append(part[1:])
        else:
            out.append(match.group(part))
    return "".join(out)


class BusPurger:
    """A worker's end of bus-driven purges (kept in its Resources across reloads)."""

    def __init__(self, registry: CacheRegistry, metrics: MetricsRegistry | None) -> None:
        self.registry = registry
        self.rules: tuple[Rule, ...] = ()
        self.realtime: Realtime | None = None
        # Tells this worker's own purge commands apart from every other worker's.
        self.origin = os.urandom(8).hex()
        self.counts: dict[str, list[float]] = {"event": [0.0], "admin": [0.0]}
        if metrics is not None:
            purges = metrics.counter(
                "cache_bus_purges_total",
                "Purges this worker made on an event of the bus, by source (event: a "
                "cache.invalidate rule; admin: the admin API or potok cache purge elsewhere).",
                ("source",),
            )
            self.counts = {source: purges.cell((source,)) for source in self.counts}
        self._tasks: set[asyncio.Task[None]] = set()

    def attach(self, realtime: Realtime, rules: tuple[InvalidateRuleConfig, ...]) -> None:
        self.rules = tuple(compile_rule(rule) for rule in rules)
        if self.realtime is not realtime:
            self.realtime = realtime
            realtime.listeners.append(self.on_event)

    # From the bus --------------------------------------------------------------------

    def on_event(self, event: Event) -> bool:
        """Called for every bus event; True if it was a purge command (not for clients)."""
        if event.channel == PURGE_CHANNEL:
            data = event.data
            mine = isinstance(data, dict) and data.get("origin") == self.origin
            if event.type == PURGE_TYPE and isinstance(data, dict) and not mine:
                self._spawn(self._command(data))
            return True
        for rule in self.rules:
            tags = rule.tags_for(event)
            if tags:
                self._spawn(self._invalidate(event.id, rule.routes, tags))
        return False

    async def _invalidate(self, event_id: str, routes: tuple[str, ...], tags: list[str]) -> None:
        removed = 0
        for tag in tags:
            for route in routes or (None,):
                removed += await self.registry.purge(route=route, tag=tag, claim=event_id)
        self.counts["event"][0] += 1
        log.info("cache purged on event", event=event_id, tags=tags, removed=removed)

    async def _command(self, data: dict[str, Any]) -> None:
        fields = {name: data.get(name) for name in ("route", "key", "prefix", "tag")}
        if not all(value is None or isinstance(value, str) for value in fields.values()):
            return
        # The worker that took the call purged the shared (Redis) stores already.
        await self.registry.purge(**fields, shared=False)
        self.counts["admin"][0] += 1

    def _spawn(self, work: Any) -> None:
        async def run() -> None:
            try:
                await work
            except Exception as exc:  # a Redis store that fails: logged, never fatal
                log.warning("cache purge on event failed", error=repr(exc))

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # To the bus ----------------------------------------------------------------------

    async def broadcast(
        self, *, route: str | None, key: str | None, prefix: str | None, tag: str | None
    ) -> bool:
        """Send a purge to every other worker and instance; False without a bus (or
        when it is down)."""
        realtime = self.realtime
        if realtime is None:
            return False
        data = {"origin": self.origin, "route": route, "key": key, "prefix": prefix, "tag": tag}
        event = make_event(PURGE_CHANNEL, PURGE_TYPE, data, reserved=True)
        try:
            await realtime.publish(event, "cache-admin")
        except Exception as exc:  # BusUnavailable, or a bus that fails otherwise
            log.warning("cache purge not sent on the bus", error=repr(exc))
            return False
        return True


def bus_purger(resources: Resources, metrics: MetricsRegistry | None) -> BusPurger:
    found: BusPurger = resources.get(
        RESOURCE_KEY, lambda: BusPurger(cache_registry(resources), metrics)
    )
    return found
