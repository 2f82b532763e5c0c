"""What every rate-limit store shares per request: the keys, counting the decision,
and refusing (429) or adding the RateLimit headers to the response.

Headers follow draft-ietf-httpapi-ratelimit-headers-10 (September 2025):

    RateLimit-Policy: "100-per-60s";q=100;w=60
    RateLimit: "100-per-60s";r=41;t=17

`RateLimit-Policy` lists every limit of the route; `RateLimit` reports one: the
limit that refused, or on admission the one with the least quota left. `t` is the
seconds until `r` goes up again, rounded up, and at least 1 (the same floor as
`Retry-After`, which it equals on a 429). On admission
both go into `exchange.response_lines`, so whatever answers the request (the
upstream, or a later policy's refusal) carries them, without a response hook.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from math import ceil
from typing import TYPE_CHECKING, NoReturn

from potok.errors import GatewayError, ServiceUnavailable
from potok.observability.metrics import Counter, MetricsRegistry
from potok.policies.rate_limit.algorithms import Algorithm, Decision, SlidingWindow, TokenBucket
from potok.policies.rate_limit.config import LimitConfig, RateLimitConfig
from potok.policies.rate_limit.keys import KeyFunction, key_function
from potok.policies.rate_limit.refused import RefusedKeys

if TYPE_CHECKING:
    from potok.exchange import Exchange


class TooManyRequests(GatewayError):
    status = 429
    title = "Too Many Requests"


def algorithm_for(limit: LimitConfig) -> Algorithm:
    if limit.algorithm == "token_bucket":
        return TokenBucket(limit.limit, limit.window, limit.burst)
    return SlidingWindow(limit.limit, limit.window)


def policy_header(limits: Sequence[LimitConfig]) -> bytes:
    """The RateLimit-Policy value: every limit as quota and whole-second window."""
    return ", ".join(
        f'"{limit.label}";q={limit.limit};w={max(1, math.ceil(limit.window))}' for limit in limits
    ).encode()


def whole_seconds(seconds: float) -> int:
    """`Retry-After` and the `t` of a RateLimit line: seconds rounded up (a nanosecond
    of float error forgiven), at least 1."""
    return max(1, ceil(seconds - 1e-9))


class LimitMetrics:
    """Decisions per route, limit and result, with every label tuple built once."""

    def __init__(self, registry: MetricsRegistry, route: str, labels: list[str]) -> None:
        self.decisions: Counter = registry.counter(
            "rate_limit_decisions_total",
            "Rate-limit decisions by route, limit and result "
            "(allowed, limited, error_allowed, error_denied).",
            ("route", "policy", "result"),
        )
        self.allowed = [(route, label, "allowed") for label in labels]
        self.limited = [(route, label, "limited") for label in labels]
        self.error_allowed = (route, "store", "error_allowed")
        self.error_denied = (route, "store", "error_denied")
        self.latency = registry.histogram(
            "redis_operations_duration_seconds",
            "Redis round trips by operation (a rate-limit batch is one).",
            ("operation",),
        )
        self.store_errors = registry.counter(
            "rate_limit_store_errors_total",
            "Rate-limit store operations that failed or timed out.",
            ("store",),
        )


class RateLimiter:
    """The per-request part: keys, decision, refusal or response headers."""

    def __init__(
        self,
        config: RateLimitConfig,
        limits: tuple[LimitConfig, ...],
        metrics: LimitMetrics,
        refused: list[RefusedKeys] | None = None,
    ) -> None:
        self.limits = limits
        # Per limit, the keys it refuses most (admin API); fed on refusal only.
        self.refused = refused
        self.keys: list[KeyFunction] = [key_function(limit.key) for limit in limits]
        self.labels = [limit.label.encode() for limit in limits]
        self.policy_value = policy_header(limits)
        # Both header lines per limit, rendered but for remaining and seconds left.
        self.head_templates = [
            b'RateLimit-Policy: %s\r\nRateLimit: "%s";r=%%d;t=%%d\r\n' % (self.policy_value, label)
            for label in self.labels
        ]
        # The same with t=1 written in, for limits whose t is always 1 (memory.py).
        self.head_templates_t1 = [
            b'RateLimit-Policy: %s\r\nRateLimit: "%s";r=%%d;t=1\r\n' % (self.policy_value, label)
            for label in self.labels
        ]
        self.metrics = metrics
        # Admissions are counted in the counter's cells: `cell[0] += 1`, no call, no hashing.
        self.admissions = [metrics.decisions.cell(labels) for labels in metrics.allowed]
        self.deny_on_error = config.on_store_error == "deny"
        self.send_headers = config.headers

    def apply(self, exchange: Exchange, decision: Decision) -> None:
        """Count the decision; raise 429 or add the response headers."""
        if not decision.admitted:
            self.refuse(decision, exchange)
        self.admitted(exchange, decision.index, decision.remaining, decision.reset)

    def admitted(self, exchange: Exchange, index: int, remaining: int, reset: float) -> None:
        self.admissions[index][0] += 1.0
        if self.send_headers:
            exchange.response_lines += self.head_templates[index] % (
                remaining,
                whole_seconds(reset),
            )

    def refuse(self, decision: Decision, exchange: Exchange) -> NoReturn:
        index = decision.index
        self.metrics.decisions.inc(self.metrics.limited[index])
        if self.refused is not None:
            self.refused[index].add(self.keys[index](exchange), exchange.started)
        retry = whole_seconds(decision.retry_after)
        limit = self.limits[decision.index]
        raise TooManyRequests(
            f"rate limit {limit.label!r} exceeded ({limit.limit} requests per "
            f"{limit.window:g}s); retry in {retry} s",
            headers=(
                (b"Retry-After", b"%d" % retry),
                (b"RateLimit-Policy", self.policy_value),
                (b"RateLimit", b'"%s";r=0;t=%d' % (self.labels[decision.index], retry)),
            ),
        )

    def store_failed(self) -> None:
        if self.deny_on_error:
            self.metrics.decisions.inc(self.metrics.error_denied)
            raise ServiceUnavailable(
                "the rate limit store is unavailable", headers=((b"Retry-After", b"1"),)
            )
        self.metrics.decisions.inc(self.metrics.error_allowed)


def state_name(scope: str, limit: LimitConfig) -> str:
    """Where a limit's counters live: the same scope and limit share them."""
    burst = limit.burst if limit.burst is not None else limit.limit
    return f"rl:{scope}:{limit.label}:{limit.algorithm}:{limit.limit}:{limit.window:g}:{burst}"
