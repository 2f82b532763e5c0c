"""The `rate_limit` policy: 429 past the quota, with Retry-After and the IETF headers
(limiter.py says which and how).

With the memory store (memory.py) the check is synchronous. With Redis the check
submits to the batched store (see redis_store.py) and suspends the request; the
batch's reply resumes its pipeline: no task, coroutine or future per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from potok.errors import GatewayError
from potok.observability.metrics import MetricsRegistry
from potok.observability.tracing.trace import CLIENT
from potok.policies.base import SUSPENDED, BuildContext, Policy, RequestOutcome, Stage
from potok.policies.rate_limit.config import LimitConfig, RateLimitConfig
from potok.policies.rate_limit.limiter import LimitMetrics, RateLimiter, state_name
from potok.policies.rate_limit.memory import memory_check
from potok.policies.rate_limit.redis_connection import ScriptClient
from potok.policies.rate_limit.redis_store import (
    SCRIPT,
    SLIDING_WINDOW,
    TOKEN_BUCKET,
    LimitSpec,
    RedisLimitStore,
    Reply,
    StoreUnavailable,
    decision,
)
from potok.policies.rate_limit.refused import RESOURCE_KEY as REFUSED_KEY
from potok.policies.rate_limit.refused import LimitInfo, RefusedKeys, RefusedRegistry
from potok.redis_clients import redis_endpoint

if TYPE_CHECKING:
    from potok.exchange import Exchange
    from potok.observability.tracing.trace import RequestTrace


def build(config: RateLimitConfig | None, context: BuildContext) -> Policy | None:
    if config is None:
        return None
    limits = config.effective_limits()
    registry = context.metrics if context.metrics is not None else MetricsRegistry()
    metrics = LimitMetrics(registry, context.route_name, [limit.label for limit in limits])
    scope = context.route_name
    if config.scope == "gateway":
        # The own API's block never shares a budget with the global one (':' is in no
        # route name, so no route's own scope can collide with it either).
        scope = "potok-api:gateway" if context.own_api else "gateway"
    limiter = RateLimiter(config, limits, metrics, _refused(config, limits, scope, context))
    check: Callable[[Exchange], RequestOutcome]
    if config.store == "memory":
        check = memory_check(limiter, limits, scope, context)
    else:
        check = _redis_check(limiter, limits, scope, context)
    return Policy(name="rate_limit", stage=Stage.LIMIT, on_request=check)


def _refused(
    config: RateLimitConfig, limits: tuple[LimitConfig, ...], scope: str, context: BuildContext
) -> list[RefusedKeys]:
    """Each limit's sketch of refused keys, kept across reloads like its counters."""
    registry: RefusedRegistry = context.resources.get(REFUSED_KEY, RefusedRegistry)
    return [
        registry.sketch(
            f"{state_name(scope, limit)}:{limit.key}",
            LimitInfo(
                scope,
                limit.label,
                limit.limit,
                limit.window,
                limit.algorithm,
                limit.key,
                config.store,
            ),
            context.route_name,
        )
        for limit in limits
    ]


def _redis_check(
    limiter: RateLimiter,
    limits: tuple[LimitConfig, ...],
    scope: str,
    context: BuildContext,
) -> Callable[[Exchange], RequestOutcome]:
    redis_config = context.redis
    if redis_config is None:  # the config check refuses this; a direct build call may not
        raise ValueError("rate_limit store 'redis' needs the top-level `redis:` section")

    def create_store() -> RedisLimitStore:
        client = ScriptClient(redis_endpoint(redis_config), SCRIPT)
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
    names = [prefix + state_name(scope, limit) + ":" for limit in limits]

    admissions = limiter.admissions
    heads = limiter.head_templates if limiter.send_headers else None

    def settle(exchange: Exchange, outcome: Reply | StoreUnavailable) -> None:
        """The batch's answer for one request: go on, or refuse it."""
        trace = exchange.trace
        if trace is not None:
            _record_span(exchange, trace, outcome)
        if type(outcome) is list and outcome[0] == 1:  # admitted: RateLimiter.admitted inline
            index = outcome[1]
            admissions[index][0] += 1.0
            if heads is not None:  # reset_ms is whole: (ms + 999) // 1000 rounds it up, >= 1
                seconds = (outcome[3] + 999) // 1000 or 1
                exchange.response_lines += heads[index] % (outcome[2], seconds)
            exchange.resume()
            return
        try:
            if isinstance(outcome, StoreUnavailable):
                limiter.store_failed()
            else:
                limiter.refuse(decision(outcome), exchange)
        except GatewayError as refusal:
            exchange.resume(refusal)
            return
        exchange.resume()  # on_store_error: allow

    one_limit = len(limits) == 1
    by_ip = one_limit and limits[0].key == "ip"
    ip_name = names[0] + "ip:"  # by_ip's key, as keys.by_ip makes it, after the limit's name

    def check(exchange: Exchange) -> RequestOutcome:
        if store.down_until and store.marked_down():  # fail fast: no waiting at all
            limiter.store_failed()
            return None
        if by_ip:
            keys = [ip_name + exchange.client_ip]
        elif one_limit:
            keys = [names[0] + limiter.keys[0](exchange)]
        else:
            keys = [name + key(exchange) for name, key in zip(names, limiter.keys, strict=True)]
        trace = exchange.trace
        if trace is not None:
            trace.waiting_since = time.time_ns()
        store.submit(specs, keys, settle, exchange)
        return SUSPENDED

    return check


def _record_span(
    exchange: Exchange, trace: RequestTrace, outcome: Reply | StoreUnavailable
) -> None:
    """A CLIENT span for the Redis round trip the request waited for."""
    start = trace.waiting_since
    failed = isinstance(outcome, StoreUnavailable)
    attributes: dict[str, object] = {"db.system.name": "redis", "db.operation.name": "EVALSHA"}
    if not failed:
        attributes["potok.rate_limit.admitted"] = type(outcome) is list and outcome[0] == 1
    trace.add_span(
        "rate_limit redis", CLIENT, start, attributes, "store_unavailable" if failed else None
    )
