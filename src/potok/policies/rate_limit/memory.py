"""The memory store's per-request check: the limits' tables in this worker, no I/O.

A route with one limit (the common case) gets a closure made for its algorithm, with
the algorithm's check-then-take written out inline: this runs on every request, and
each Python call it saves is ~2-4 % of the policy's cost (bench/instructions.sh).
`test_the_one_limit_checks_decide_as_the_algorithms` holds each inline copy to its
algorithm's `check` + `take` (which the Lua script of the Redis store mirrors).

The time is the request's arrival (`exchange.started`, the monotonic clock every
exchange reads once): no clock call per check. A request is counted when it arrived,
so one that waited before this check (a JWKS refresh) counts from its arrival.

The RateLimit line is rendered from a template made at build time; when its `t` can
only be 1 (a window of at most a second, a bucket refilling at least a token a
second) the template has it written in, and only `r` is formatted per request — for
such a sliding window not even that: its line depends on the count alone, and each is
rendered once. Measured in place (a timer around the hook under `wrk -c50`), these
and the arrival time took the check from ~1.15 to ~0.75 µs (bucket) and ~1.19 to
~0.72 µs (sliding window, 250 ms): in place, between the socket calls, a Python step
costs several times what a tight loop shows (~0.13 and ~0.18 µs there).

Tables are kept per scope, limit and key kind, so a table counting client IPs holds
the IPs themselves: the same string object for every request of a connection (and,
interned by the connection, of every connection from that address), whose hash
Python computes once and whose lookup is an identity test.
"""

from __future__ import annotations

from collections.abc import Callable
from math import ceil
from typing import TYPE_CHECKING

from potok.policies.base import BuildContext
from potok.policies.rate_limit.algorithms import (
    MemoryLimiter,
    MemoryTable,
    SlidingWindow,
    TokenBucket,
)
from potok.policies.rate_limit.config import LimitConfig
from potok.policies.rate_limit.keys import KeyFunction, key_function
from potok.policies.rate_limit.limiter import RateLimiter, algorithm_for, state_name

if TYPE_CHECKING:
    from potok.exchange import Exchange

RequestHook = Callable[["Exchange"], None]
"""The policy's `on_request` hook over memory tables."""


def memory_check(
    limiter: RateLimiter,
    limits: tuple[LimitConfig, ...],
    scope: str,
    context: BuildContext,
) -> RequestHook:
    # Tables live in the worker's resources, so a config reload keeps the counters.
    tables: list[MemoryTable] = []
    for limit in limits:

        def create(limit: LimitConfig = limit) -> MemoryTable:
            return MemoryTable(algorithm_for(limit))

        name = f"memory:{state_name(scope, limit)}:{limit.key}"
        tables.append(context.resources.get(name, create))
    keys = [_client_ip if limit.key == "ip" else key_function(limit.key) for limit in limits]

    if len(tables) == 1:
        algorithm = tables[0].algorithm
        key = None if limits[0].key == "ip" else keys[0]
        if isinstance(algorithm, SlidingWindow):
            return _sliding_window_check(limiter, tables[0], algorithm, key)
        if isinstance(algorithm, TokenBucket):
            return _token_bucket_check(limiter, tables[0], algorithm, key)
    memory = MemoryLimiter(tables)

    def check_all(exchange: Exchange) -> None:
        decision = memory.acquire([key(exchange) for key in keys], exchange.started)
        limiter.apply(exchange, decision)

    return check_all


def _client_ip(exchange: Exchange) -> str:
    return exchange.client_ip


def _sliding_window_check(
    limiter: RateLimiter,
    table: MemoryTable,
    window: SlidingWindow,
    key_of: KeyFunction | None,  # None: the client IP
) -> RequestHook:
    states = table.states
    limit = window.limit
    last = limit - 1
    span = window.window
    admissions = limiter.admissions[0]
    head = limiter.head_templates[0] if limiter.send_headers else None
    # Within a window of a second or less the oldest admission leaves within a second, so
    # the line depends on the count alone: each is rendered once, when first needed (at
    # most `limit` of them, and a sliding window's limit is at most 10,000).
    head_t1 = limiter.head_templates_t1[0] if head is not None and span <= 1.0 else None
    lines: list[bytes | None] = [None] * limit if head_t1 is not None else []

    def check(exchange: Exchange) -> None:
        now = exchange.started
        key = exchange.client_ip if key_of is None else key_of(exchange)
        state = states.get(key)
        if state is None:  # a new key: the table creates it (and keeps itself bounded)
            state = table.state(key, now)
        # SlidingWindow.check, then take:
        horizon = now - span
        while state and state[0] <= horizon:
            state.popleft()
        count = len(state)
        if count >= limit:
            limiter.refuse(window.check(state, now), exchange)
        oldest = state[0] if state else now
        state.append(now)
        admissions[0] += 1.0
        if head_t1 is not None:  # RateLimiter.admitted, t known to be 1
            line = lines[count]
            if line is None:
                line = lines[count] = head_t1 % (last - count)
            exchange.response_lines += line
        elif head is not None:  # RateLimiter.admitted
            seconds = ceil(oldest - horizon - 1e-9)  # whole_seconds(), inline
            exchange.response_lines += head % (last - count, seconds if seconds > 1 else 1)

    return check


def _token_bucket_check(
    limiter: RateLimiter,
    table: MemoryTable,
    bucket: TokenBucket,
    key_of: KeyFunction | None,  # None: the client IP
) -> RequestHook:
    states = table.states
    burst = float(bucket.burst)
    rate = bucket.rate
    admissions = limiter.admissions[0]
    head = limiter.head_templates[0] if limiter.send_headers else None
    # At a token a second or more, the next token is at most a second away.
    head_t1 = limiter.head_templates_t1[0] if head is not None and rate >= 1.0 else None

    def check(exchange: Exchange) -> None:
        # The same first lines as the sliding window's: a helper would be one more Python
        # call per request, the thing these closures exist to avoid.
        now = exchange.started
        key = exchange.client_ip if key_of is None else key_of(exchange)
        state = states.get(key)
        if state is None:  # a new key: the table creates it (and keeps itself bounded)
            state = table.state(key, now)
        # TokenBucket.check, then take:
        tokens = state[0] + (now - state[1]) * rate
        if tokens > burst:  # noqa: PLR1730 - min() would be a call per request
            tokens = burst
        state[1] = now
        if tokens < 1.0:
            state[0] = tokens
            limiter.refuse(bucket.check(state, now), exchange)
        left = tokens - 1.0
        state[0] = left
        admissions[0] += 1.0
        if head_t1 is not None:  # RateLimiter.admitted, t known to be 1
            exchange.response_lines += head_t1 % int(left)  # left >= 0: int() is floor()
        elif head is not None:  # RateLimiter.admitted
            whole = int(left)
            seconds = ceil((whole + 1 - left) / rate - 1e-9)  # whole_seconds(), inline
            exchange.response_lines += head % (whole, seconds if seconds > 1 else 1)

    return check
