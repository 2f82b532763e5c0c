"""Metrics of the upstream side: breakers, retries, target health, bulkheads."""

from __future__ import annotations

from potok.observability.metrics import MetricsRegistry


class UpstreamMetrics:
    """Bound once per worker; label values are service and target names from config."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self.breaker_state = registry.gauge(
            "circuit_breaker_state",
            "Circuit breaker per service and worker: 0 closed, 1 open, 2 half-open.",
            ("service",),
            per_worker=True,
        )
        self.breaker_transitions = registry.counter(
            "circuit_breaker_transitions_total",
            "Breaker state changes, by the state entered.",
            ("service", "state"),
        )
        self.retries = registry.counter(
            "upstream_retries_total", "Retried upstream attempts, by reason.", ("service", "reason")
        )
        self.budget_exhausted = registry.counter(
            "upstream_retry_budget_exhausted_total",
            "Retries not made because the retry budget was used up.",
            ("service",),
        )
        self.target_healthy = registry.gauge(
            "upstream_target_healthy",
            "1 if the target gets traffic (not ejected, checks passing), per worker.",
            ("service", "target"),
            per_worker=True,
        )
        self.bulkhead_rejected = registry.counter(
            "upstream_bulkhead_rejected_total",
            "Requests refused because the service's bulkhead was full.",
            ("service",),
        )
        self.breaker_rejected = registry.counter(
            "upstream_breaker_rejected_total",
            "Requests answered at once because the breaker was open.",
            ("service",),
        )
        self.dns_addresses = registry.gauge(
            "upstream_dns_addresses",
            "Addresses a target's host name has (DNS discovery; the last good ones while it "
            "fails), per worker.",
            ("service", "name"),
            per_worker=True,
        )
        self.dns_resolving = registry.gauge(
            "upstream_dns_resolving",
            "1 while a target's host name resolves, 0 while it fails, per worker.",
            ("service", "name"),
            per_worker=True,
        )
