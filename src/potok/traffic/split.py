"""Weighted and canary routes: the terminal stage that picks a variant per request.

Built at config load: each variant is the route's ordinary `ProxyStage` for one
service, the canary rules are compiled to plain lookups, and the weights to a table of
cumulative sums. Per request: the rules in order (a header, a cookie, a claim of the
caller), else the weights — drawn at random, or from a hash of the user id or client
address (`sticky`), so a user lands on the same variant on every request and on every
instance. CRC-32 of `route:key` is that hash: stable across processes and versions
(Python's own `hash` is salted per process), and salted by the route, so two
experiments do not split users alike.
"""

from __future__ import annotations

import random
import zlib
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import TYPE_CHECKING

from potok.http.http11 import first_header

if TYPE_CHECKING:
    from potok.exchange import Exchange, RoutePipeline
    from potok.grpc.stage import GrpcStage
    from potok.observability.metrics import MetricsRegistry
    from potok.traffic.config import CanaryRule, Sticky
    from potok.upstream.stage import ProxyStage

# A rule: the exchange -> does it match?
Matcher = Callable[["Exchange"], bool]

_COOKIE = b"cookie"


class Variant:
    """One service of a weighted route, with its proxy stage."""

    __slots__ = ("call", "count", "name", "stage", "weight")

    def __init__(self, name: str, weight: int, stage: ProxyStage | GrpcStage) -> None:
        self.name = name
        self.weight = weight
        self.stage = stage
        # The stage's bound __call__: calling it skips the instance-call slot lookup, a
        # few hundred instructions per request on a route whose budget is 2 % (BENCHMARKS).
        self.call = stage.__call__
        self.count: list[float] = [0.0]  # the metric's cell: requests sent to it


class VariantStage:
    """The terminal stage of a weighted route: rules, then weights, then the proxy."""

    __slots__ = ("_bounds", "_by_weight", "_key", "_route", "_rules", "_total", "variants")

    def __init__(
        self,
        route: str,
        variants: Sequence[Variant],
        rules: Sequence[tuple[Matcher, Variant]],
        sticky: Sticky,
    ) -> None:
        self._route = route
        self.variants = tuple(variants)
        self._rules = tuple(rules)
        weighted = [v for v in variants if v.weight > 0]
        self._by_weight = tuple(weighted)
        self._bounds = tuple(accumulate(v.weight for v in weighted))
        self._total = self._bounds[-1] if self._bounds else 0
        self._key = _sticky_key(sticky)

    def bind(self, pipeline: RoutePipeline) -> None:
        for variant in self.variants:
            variant.stage.bind(pipeline)

    def count_in(self, registry: MetricsRegistry) -> None:
        counter = registry.counter(
            "route_variant_requests_total",
            "Requests a weighted route sent to each of its variants.",
            ("route", "variant"),
        )
        for variant in self.variants:
            variant.count = counter.cell((self._route, variant.name))

    def choose(self, exchange: Exchange) -> Variant:
        for matches, variant in self._rules:
            if matches(exchange):
                return variant
        if self._key is not None:
            key = self._key(exchange)
            if key is not None:
                point = zlib.crc32(f"{self._route}:{key}".encode()) % self._total
                return self._by_weight[bisect_right(self._bounds, point)]
        return self._by_weight[bisect_right(self._bounds, random.random() * self._total)]

    def __call__(self, exchange: Exchange) -> None:
        variant = self.choose(exchange)
        variant.count[0] += 1
        exchange.service_name = variant.name
        variant.call(exchange)


def _sticky_key(sticky: Sticky) -> Callable[[Exchange], str | None] | None:
    if sticky == "user":
        return lambda exchange: exchange.identity.subject if exchange.identity else None
    if sticky == "client_ip":
        return lambda exchange: exchange.client_ip
    return None


def compile_rule(rule: CanaryRule) -> Matcher:
    """A canary rule as a test on the exchange."""
    values = frozenset(rule.values)
    if rule.header is not None:
        name = rule.header.lower().encode()

        def by_header(exchange: Exchange) -> bool:
            value = first_header(exchange.headers, name)
            return value is not None and value.decode("latin-1") in values

        return by_header
    if rule.cookie is not None:
        cookie = rule.cookie

        def by_cookie(exchange: Exchange) -> bool:
            return _cookie(exchange, cookie) in values

        return by_cookie
    claim = rule.claim

    def by_claim(exchange: Exchange) -> bool:
        principal = exchange.identity
        if principal is None:
            return False
        if claim == "sub":
            return principal.subject in values
        if claim == "org":
            return principal.org in values
        if claim == "role":
            return not values.isdisjoint(principal.roles)
        return not values.isdisjoint(principal.scopes)

    return by_claim


def _cookie(exchange: Exchange, wanted: str) -> str | None:
    """The value of one cookie (RFC 6265 §5.4: `a=1; b=2`, possibly several headers)."""
    for name, value in exchange.headers:
        if len(name) == 6 and name.lower() == _COOKIE:
            for pair in value.decode("latin-1").split(";"):
                key, sep, found = pair.strip().partition("=")
                if sep and key == wanted:
                    return found.strip('"')
    return None
