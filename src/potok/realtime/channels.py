"""Channel authorization: which caller may subscribe or publish to which channel.

Rules are compiled once into regular expressions; `{org}` and `{sub}` become
named groups compared with the caller's token afterwards, so one expression
per rule serves every caller. The first rule whose pattern matches decides.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from potok.identity.principal import Principal
from potok.realtime.config import ChannelRuleConfig
from potok.realtime.events import valid_channel

Action = Literal["subscribe", "publish"]


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """`org:{org}:tasks` -> a regex with named groups; `*` is one segment, or the rest at
    the end of the pattern."""
    out: list[str] = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("{org}", index):
            out.append("(?P<org>[^:]+)")
            index += 5
        elif pattern.startswith("{sub}", index):
            out.append("(?P<sub>[^:]+)")
            index += 5
        elif pattern[index] == "*":
            out.append(".+" if index == len(pattern) - 1 else "[^:]+")
            index += 1
        else:
            out.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(out) + r"\Z")


@dataclass(frozen=True, slots=True)
class ChannelRule:
    pattern: str
    regex: re.Pattern[str]
    subscribe: bool
    publish: bool
    roles: frozenset[str]

    def decide(self, match: re.Match[str], principal: Principal, action: Action) -> Decision:
        if not (self.subscribe if action == "subscribe" else self.publish):
            return Decision(False, f"{action} is not allowed on this channel")
        groups = match.groupdict()
        org = groups.get("org")
        if org is not None and org != principal.org:
            return Decision(False, "the channel belongs to another organisation")
        sub = groups.get("sub")
        if sub is not None and sub != principal.subject:
            return Decision(False, "the channel belongs to another user")
        if self.roles and not (self.roles & principal.roles):
            return Decision(False, "a role this channel needs is missing")
        return Decision(True)


class ChannelRules:
    def __init__(self, rules: Iterable[ChannelRuleConfig]) -> None:
        self.rules = tuple(
            ChannelRule(
                r.pattern, compile_pattern(r.pattern), r.subscribe, r.publish, frozenset(r.roles)
            )
            for r in rules
        )

    def decide(self, channel: str, principal: Principal, action: Action) -> Decision:
        if not valid_channel(channel):
            return Decision(False, "not a valid channel name")
        for rule in self.rules:
            match = rule.regex.match(channel)
            if match is not None:
                return rule.decide(match, principal, action)
        return Decision(False, "no channel rule allows this channel")
