"""Metrics of the upstream side: breakers, retries, target health, bulkheads."""

from __future__ import annotations

from collections.abc import Callable

from potok.observability.metrics import Gauge, Labels, MetricsRegistry


class ComputedGauge(Gauge):
    """A gauge whose values are read at scrape (and snapshot) time from functions.

    For states that change with the clock alone, like a breaker whose open time ran
    out with no request to move it to half-open.
    """

    __slots__ = ("sources",)

    def __init__(self, name: str, help: str, labelnames: Labels, per_worker: bool) -> None:
        super().__init__(name, help, labelnames, per_worker)
        self.sources: dict[Labels, Callable[[], float]] = {}

    def watch(self, labels: Labels, source: Callable[[], float]) -> None:
        self.sources[labels] = source

    def remove(self, labels: Labels) -> None:
        self.values.pop(labels, None)
        self.sources.pop(labels, None)

    def current(self) -> dict[Labels, float]:
        values = dict(self.values)
        for labels, source in self.sources.items():
            values[labels] = float(source())
        return values


class UpstreamMetrics:
    """Bound once per worker; label values are service and target names from config."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self.breaker_state = _computed(
            registry,
            "circuit_breaker_state",
            "Circuit breaker per service and worker: 0 closed, 1 open, 2 half-open "
            "(also once the open time is over and the next request may probe).",
            ("service",),
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
        self.target_healthy = _computed(
            registry,
            "upstream_target_healthy",
            "1 if the target gets traffic (not ejected, checks passing), per worker.",
            ("service", "target"),
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
        self.connect_duration = registry.histogram(
            "upstream_connect_duration_seconds",
            "Opening a new upstream connection, by phase: tcp (connect) and tls (handshake, "
            "https:// targets); tcp_tls for a gRPC route's TLS connections (connect and "
            "handshake together). Reused keep-alive connections are not counted.",
            ("service", "phase"),
        )
        self.tls_failures = registry.counter(
            "upstream_tls_failures_total",
            "TLS handshakes with a target that failed, by reason (expired, "
            "hostname_mismatch, unknown_ca, timeout, handshake, ...).",
            ("service", "target", "reason"),
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


def _computed(registry: MetricsRegistry, name: str, help: str, labels: Labels) -> ComputedGauge:
    """A per-worker ComputedGauge, registered once (a reload binds the same one)."""
    found = registry.gauges.setdefault(name, ComputedGauge(name, help, labels, per_worker=True))
    assert isinstance(found, ComputedGauge)
    return found
