"""The `rate_limit` policy: 429 past the quota, with Retry-After and the IETF headers.

Headers follow draft-ietf-httpapi-ratelimit-headers-10 (September 2025):

    RateLimit-Policy: "100-per-60s";q=100;w=60
    RateLimit: "100-per-60s";r=41;t=17

`RateLimit-Policy` lists every limit of the route; `RateLimit` reports one: the
limit that refused, or on admission the one with the least quota left. `t` is the
seconds until `r` goes up again, so on a 429 it equals `Retry-After`.

With the memory store the check is synchronous. With Redis the check submits to the
batched store (see redis_store.py) and hands the pipeline a future that the batch's
reply settles: no task or coroutine per request.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

from potok.errors import GatewayError, ServiceUnavailable
from potok.observability.metrics import Counter, MetricsRegistry
from potok.policies.base import BuildContext, Headers, Policy, Stage
from potok.policies.rate_limit.algorithms import (
    Algorithm,
    Decision,
    MemoryLimiter,
    MemoryTable,
    SlidingWindow,
    TokenBucket,
)
from potok.policies.rate_limit.config import LimitConfig, RateLimitConfig
from potok.policies.rate_limit.keys import KeyFunction, key_function
from potok.policies.rate_limit.redis_connection import ScriptClient
from potok.policies.rate_limit.redis_store import (
    SCRIPT,
    SLIDING_WINDOW,
    TOKEN_BUCKET,
    LimitSpec,
    RedisLimitStore,
    StoreUnavailable,
)
from potok.routing.endpoints import API_ROUTE_NAME

if TYPE_CHECKING:
    from potok.exchange import Exchange

_CONTEXT_KEY = "rate_limit"
_HEALTH_PREFIX = b"/api/v1/health"


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


def _seconds(value: float) -> int:
    return max(0, math.ceil(value - 1e-9))


class _Metrics:
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
        metrics: _Metrics,
        exempt_health: bool,
    ) -> None:
        self.limits = limits
        self.keys: list[KeyFunction] = [key_function(limit.key) for limit in limits]
        self.labels = [limit.label.encode() for limit in limits]
        self.policy_value = policy_header(limits)
        self.policy_pair = (b"RateLimit-Policy", self.policy_value)
        # The RateLimit value per limit, only remaining and seconds left to fill in.
        self.rate_templates = [b'"%s";r=%%d;t=%%d' % label for label in self.labels]
        self.metrics = metrics
        self.count = metrics.decisions.inc
        self.allowed = metrics.allowed
        self.deny_on_error = config.on_store_error == "deny"
        self.send_headers = config.headers
        self.exempt_health = exempt_health

    def exempt(self, exchange: Exchange) -> bool:
        # Liveness and readiness probes must never be throttled into a restart.
        return self.exempt_health and exchange.path.startswith(_HEALTH_PREFIX)

    def key_values(self, exchange: Exchange) -> list[str]:
        return [key(exchange) for key in self.keys]

    def apply(self, exchange: Exchange, decision: Decision) -> None:
        """Count the decision; raise 429 or remember it for the response headers."""
        if not decision.admitted:
            self.metrics.decisions.inc(self.metrics.limited[decision.index])
            retry = max(1, _seconds(decision.retry_after))
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
        self.count(self.allowed[decision.index])
        if self.send_headers:
            context = exchange.context
            if context is None:
                exchange.context = {_CONTEXT_KEY: decision}
            else:
                context[_CONTEXT_KEY] = decision

    def store_failed(self) -> None:
        if self.deny_on_error:
            self.metrics.decisions.inc(self.metrics.error_denied)
            raise ServiceUnavailable(
                "the rate limit store is unavailable", headers=((b"Retry-After", b"1"),)
            )
        self.metrics.decisions.inc(self.metrics.error_allowed)

    def response_headers(self, exchange: Exchange, headers: Headers) -> Headers:
        context = exchange.context
        decision = context.get(_CONTEXT_KEY) if context is not None else None
        if decision is None:
            return headers
        reset = decision.reset
        seconds = int(reset)
        if reset - seconds > 1e-9:
            seconds += 1
        headers.append(self.policy_pair)
        template = self.rate_templates[decision.index]
        headers.append((b"RateLimit", template % (decision.remaining, seconds)))
        return headers


def build(
    config: RateLimitConfig | None,
    context: BuildContext,
    clock: Callable[[], float] = time.monotonic,
) -> Policy | None:
    if config is None:
        return None
    limits = config.effective_limits()
    registry = context.metrics if context.metrics is not None else MetricsRegistry()
    metrics = _Metrics(registry, context.route_name, [limit.label for limit in limits])
    limiter = RateLimiter(config, limits, metrics, context.route_name == API_ROUTE_NAME)
    scope = context.route_name if config.scope == "route" else "gateway"
    on_response = limiter.response_headers if config.headers else None
    if config.store == "memory":
        return _memory_policy(
            limiter,
            limits=limits,
            scope=scope,
            context=context,
            clock=clock,
            on_response=on_response,
        )
    return _redis_policy(limiter, limits, scope, context, on_response)


def _state_name(scope: str, limit: LimitConfig) -> str:
    """Where a limit's counters live: the same scope and limit share them."""
    burst = limit.burst if limit.burst is not None else limit.limit
    return f"rl:{scope}:{limit.label}:{limit.algorithm}:{limit.limit}:{limit.window:g}:{burst}"


def _memory_policy(
    limiter: RateLimiter,
    *,
    limits: tuple[LimitConfig, ...],
    scope: str,
    context: BuildContext,
    clock: Callable[[], float],
    on_response: Callable[[Exchange, Headers], Headers] | None,
) -> Policy:
    # Tables live in the worker's resources, so a config reload keeps the counters.
    tables: list[MemoryTable] = []
    for limit in limits:

        def create(limit: LimitConfig = limit) -> MemoryTable:
            return MemoryTable(algorithm_for(limit))

        tables.append(context.resources.get("memory:" + _state_name(scope, limit), create))
    memory = MemoryLimiter(tables, clock)

    def check(exchange: Exchange) -> None:
        if limiter.exempt_health and limiter.exempt(exchange):
            return
        limiter.apply(exchange, memory.acquire(limiter.key_values(exchange)))

    if len(tables) == 1:  # the common case, inlined: this runs on every request
        table = tables[0]
        states = table.states
        algorithm = table.algorithm
        key_of = limiter.keys[0]

        def check(exchange: Exchange) -> None:
            if limiter.exempt_health and limiter.exempt(exchange):
                return
            now = clock()
            key = key_of(exchange)
            state = states.get(key)
            if state is None:  # a new key: the table creates it (and keeps itself bounded)
                state = table.state(key, now)
            result = algorithm.check(state, now)
            if result.admitted:
                algorithm.take(state, now)
            limiter.apply(exchange, result)

    return Policy(name="rate_limit", stage=Stage.LIMIT, on_request=check, on_response=on_response)


def _redis_policy(
    limiter: RateLimiter,
    limits: tuple[LimitConfig, ...],
    scope: str,
    context: BuildContext,
    on_response: Callable[[Exchange, Headers], Headers] | None,
) -> Policy:
    redis_config = context.redis
    if redis_config is None:  # the config check refuses this; a direct build call may not
        raise ValueError("rate_limit store 'redis' needs the top-level `redis:` section")

    def create_store() -> RedisLimitStore:
        client = ScriptClient(
            redis_config.url, SCRIPT, connect_timeout=redis_config.connect_timeout
        )
        context.resources.on_close(client.close)
        return RedisLimitStore(
            client,
            redis_config,
            latency=limiter.metrics.latency,
            errors=limiter.metrics.store_errors,
        )

    store: RedisLimitStore = context.resources.get(
        f"rate_limit:redis:{redis_config.url}", create_store
    )
    prefix = redis_config.key_prefix
    specs = [
        LimitSpec(
            limit.label,
            TOKEN_BUCKET if limit.algorithm == "token_bucket" else SLIDING_WINDOW,
            limit.limit,
            limit.window,
            limit.burst if limit.burst is not None else limit.limit,
        )
        for limit in limits
    ]
    names = [prefix + _state_name(scope, limit) + ":" for limit in limits]

    def settle(
        exchange: Exchange, waiter: asyncio.Future[None], outcome: Decision | StoreUnavailable
    ) -> None:
        """The batch's answer for one request: go on, or refuse through the waiter."""
        try:
            if isinstance(outcome, StoreUnavailable):
                limiter.store_failed()
            else:
                limiter.apply(exchange, outcome)
        except GatewayError as refusal:
            waiter.set_exception(refusal)
            return
        waiter.set_result(None)

    def check(exchange: Exchange) -> asyncio.Future[None] | None:
        if limiter.exempt_health and limiter.exempt(exchange):
            return None
        if store.marked_down():  # fail fast: no waiting at all
            limiter.store_failed()
            return None
        keys = [name + key(exchange) for name, key in zip(names, limiter.keys, strict=True)]
        waiter: asyncio.Future[None] = store.loop.create_future()
        store.submit(specs, keys, partial(settle, exchange, waiter))
        return waiter

    return Policy(name="rate_limit", stage=Stage.LIMIT, on_request=check, on_response=on_response)
