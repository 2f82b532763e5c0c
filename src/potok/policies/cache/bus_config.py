"""The top-level `cache:` section: purges driven by events of the realtime bus.

A rule maps a bus channel (a pattern with `{name}` placeholders, like the realtime
channel rules) and optionally event types to tags, filled from the channel's
placeholders and the event's data: `{org}` from `org:{org}:tasks`, `{data.id}` from
`{"id": 42}`. Every worker of every instance purges those tags when such an event is
published (the memory stores per worker, a Redis store once).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pydantic import Field, field_validator, model_validator

from potok.config.base import ConfigModel

if TYPE_CHECKING:
    from potok.config.models import GatewayConfig

# Channel characters, `*` wildcards and `{name}` placeholders.
_PATTERN = re.compile(r"^([A-Za-z0-9_:@=+.*-]|\{[A-Za-z_][A-Za-z0-9_]*\})+$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_FIELD = re.compile(r"^(data(\.[A-Za-z0-9_-]+)+|[A-Za-z_][A-Za-z0-9_]*)$")
_TYPE = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")


def placeholders(pattern: str) -> list[str]:
    return _PLACEHOLDER.findall(pattern)


class InvalidateRuleConfig(ConfigModel):
    """Events on channels matching `channel` (and of one of `events`, if given) purge `tags`."""

    channel: str = Field(
        description=(
            "Channel pattern: `{name}` captures one ':'-separated segment for the tags; `*` "
            "matches one segment, or, as the last character, the whole rest (e.g. "
            "'org:{org}:tasks')."
        )
    )
    events: tuple[str, ...] = Field(
        (), description="Event types that purge (e.g. 'task:updated'); empty: every event."
    )
    tags: tuple[str, ...] = Field(
        min_length=1,
        description=(
            "Tags to purge: `{name}` is a placeholder of `channel`, `{data.a.b}` a field of "
            "the event's data (an event without it purges nothing for that tag), e.g. "
            "'tasks:{org}', 'task:{data.id}'."
        ),
    )
    routes: tuple[str, ...] = Field(
        (), description="Only these routes' caches; empty: every route with a cache."
    )

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        if not _PATTERN.match(value) or len(value) > 200:
            raise ValueError(
                "a pattern is channel characters (letters, digits, _ : @ = + . -), '*' and "
                "{name} placeholders"
            )
        names = placeholders(value)
        if len(names) != len(set(names)):
            raise ValueError("a placeholder appears twice")
        return value

    @field_validator("events")
    @classmethod
    def _events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _TYPE.match(name):
                raise ValueError(f"{name!r}: an event type is 1-64 of letters, digits, _ . : / -")
        return value

    @model_validator(mode="after")
    def _tags(self) -> InvalidateRuleConfig:
        known = set(placeholders(self.channel))
        for tag in self.tags:
            if not tag or "{" in _PLACEHOLDER.sub("", tag) or "}" in _PLACEHOLDER.sub("", tag):
                raise ValueError(f"tags: {tag!r} has an unclosed brace")
            for name in placeholders(tag):
                if not _FIELD.match(name) or (not name.startswith("data.") and name not in known):
                    raise ValueError(
                        f"tags: {{{name}}} in {tag!r} is neither a placeholder of the channel "
                        f"pattern ({', '.join(sorted(known)) or 'none'}) nor {{data.field}}"
                    )
        return self


class CacheSectionConfig(ConfigModel):
    """Response caches of every route together (each route's cache is `policies.cache`)."""

    invalidate: tuple[InvalidateRuleConfig, ...] = Field(
        (),
        description=(
            "Purges by tag on events of the realtime bus, on every worker and instance "
            "(needs the `realtime:` section)."
        ),
    )


def cache_problems(config: GatewayConfig) -> list[tuple[str, str]]:
    """Checks that need more of the file than the `cache:` block."""
    rules = config.cache.invalidate
    if not rules:
        return []
    problems: list[tuple[str, str]] = []
    if config.realtime is None:
        problems.append(("cache.invalidate", "needs the `realtime:` section (its event bus)"))
    # A route's name as the runtime gives it: its own, or `<service>-<index>`.
    routes = enumerate(config.routes)
    names = {route.name or f"{route.primary_service}-{index}" for index, route in routes}
    for index, rule in enumerate(rules):
        for route in rule.routes:
            if route not in names:
                problems.append((f"cache.invalidate[{index}].routes", f"no route {route!r}"))
    return problems
