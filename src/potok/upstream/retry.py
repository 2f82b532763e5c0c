"""Retry decisions: which requests are safe to replay, how long to wait, and the budget."""

from __future__ import annotations

import random
from collections.abc import Callable

from potok.config.resilience import BackoffConfig, RetryBudgetConfig, RetryConfig


class RetryBudget:
    """Retries in flight stay under ratio x requests in flight (Envoy's retry budget).

    Only retries with nowhere good to go are counted: one that can move to a target
    serving well is let through uncounted (`ProxyCall._may_retry`), so one failing
    target of several never uses the budget up. A counted retry counts from its
    decision, backoff included, to the request's end (while the whole service fails,
    the sleeping ones are what bounds the storm). A failing upstream then sees at
    most (1 + ratio) times the offered load, whatever the number of attempts.
    """

    __slots__ = ("_min", "_ratio", "active_requests", "active_retries")

    def __init__(self, config: RetryBudgetConfig) -> None:
        self._ratio = config.ratio
        self._min = config.min_concurrent
        self.active_requests = 0
        self.active_retries = 0

    def can_retry(self) -> bool:
        allowed = max(self._min, int(self._ratio * self.active_requests))
        return self.active_retries < allowed


class Backoff:
    """Full jitter: uniform(0, min(max, initial * multiplier ** retry_number))."""

    __slots__ = ("_config", "_random")

    def __init__(self, config: BackoffConfig, rng: Callable[[], float] = random.random) -> None:
        self._config = config
        self._random = rng

    def delay(self, retry_number: int) -> float:
        config = self._config
        ceiling = min(config.max, config.initial * config.multiplier**retry_number)
        return self._random() * ceiling


class RetryPolicy:
    """A service's retry rules, compiled to sets for per-request checks."""

    __slots__ = (
        "attempts",
        "backoff",
        "budget",
        "idempotency_header",
        "max_body_bytes",
        "methods",
        "on_status",
    )

    def __init__(self, config: RetryConfig, budget: RetryBudget) -> None:
        self.attempts = config.attempts
        self.backoff = Backoff(config.backoff)
        self.budget = budget  # shared by every route of the service
        self.on_status = frozenset(config.on_status)
        self.methods = frozenset(m.encode() for m in config.methods)
        self.idempotency_header = config.idempotency_header.lower().encode()
        self.max_body_bytes = config.max_body_bytes

    def is_safe(self, method: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
        """Idempotent by method, or marked so by the client's Idempotency-Key."""
        if method in self.methods:
            return True
        wanted = self.idempotency_header
        return any(name.lower() == wanted for name, _ in headers)
