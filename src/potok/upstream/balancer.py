"""Choosing a target per request: round robin, least requests, smooth weighted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from potok.upstream.target import Target


class Balancer(Protocol):
    def choose(self) -> Target: ...


class RoundRobin:
    __slots__ = ("_next", "_targets")

    def __init__(self, targets: Sequence[Target]) -> None:
        self._targets = tuple(targets)
        self._next = 0

    def choose(self) -> Target:
        targets = self._targets
        index = self._next
        self._next = (index + 1) % len(targets)
        return targets[index]


class LeastRequests:
    """Fewest requests in flight; ties take turns, so equal targets share the load evenly."""

    __slots__ = ("_targets", "_turn")

    def __init__(self, targets: Sequence[Target]) -> None:
        self._targets = tuple(targets)
        self._turn = 0

    def choose(self) -> Target:
        least = min(t.inflight for t in self._targets)
        tied = [t for t in self._targets if t.inflight == least]
        self._turn += 1
        return tied[self._turn % len(tied)]


class SmoothWeighted:
    """nginx's smooth weighted round robin: weights 5,1,1 give a a b a c a a (not a*5, b, c)."""

    __slots__ = ("_current", "_targets", "_total")

    def __init__(self, targets: Sequence[Target]) -> None:
        self._targets = tuple(targets)
        self._current = [0] * len(self._targets)
        self._total = sum(t.weight for t in self._targets)

    def choose(self) -> Target:
        current = self._current
        best = 0
        for index, target in enumerate(self._targets):
            current[index] += target.weight
            if current[index] > current[best]:
                best = index
        current[best] -= self._total
        return self._targets[best]


def make_balancer(kind: str, targets: Sequence[Target]) -> Balancer:
    if len(targets) == 1:
        return _Single(targets[0])
    if kind == "least_requests":
        return LeastRequests(targets)
    if kind == "weighted":
        return SmoothWeighted(targets)
    return RoundRobin(targets)


class _Single:
    __slots__ = ("_target",)

    def __init__(self, target: Target) -> None:
        self._target = target

    def choose(self) -> Target:
        return self._target
