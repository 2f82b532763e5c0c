"""Webhook metrics. Labels are bounded: configured source names and fixed reasons/results."""

from __future__ import annotations

from potok.observability.metrics import Counter, Gauge, Histogram, MetricsRegistry

ACCEPT_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
)  # fmt: skip
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0)


class WebhookMetrics:
    def __init__(self, registry: MetricsRegistry | None) -> None:
        registry = registry if registry is not None else MetricsRegistry()
        self.received: Counter = registry.counter(
            "webhooks_received_total", "Deliveries received, by source.", ("source",)
        )
        self.verified: Counter = registry.counter(
            "webhooks_verified_total", "Deliveries whose signature verified.", ("source",)
        )
        self.rejected: Counter = registry.counter(
            "webhooks_rejected_total",
            "Deliveries refused, by source and reason (bad_signature, timestamp_old, ...).",
            ("source", "reason"),
        )
        self.duplicates: Counter = registry.counter(
            "webhooks_duplicates_total",
            "Replays of an accepted delivery id: answered 200, nothing done again.",
            ("source",),
        )
        self.accepted: Counter = registry.counter(
            "webhooks_accepted_total", "Deliveries stored in the outbox.", ("source",)
        )
        self.store_failures: Counter = registry.counter(
            "webhooks_store_failures_total",
            "Deliveries answered 503 because the outbox could not store them.",
            ("source",),
        )
        self.accept_seconds: Histogram = registry.histogram(
            "webhooks_accept_seconds",
            "From the request's arrival to the outbox commit (before the 2xx).",
            (),
            ACCEPT_BUCKETS,
        )
        self.attempts: Counter = registry.counter(
            "webhooks_delivery_attempts_total",
            "Delivery attempts, by source and result (delivered, failed, dead; held_back: not "
            "sent because the service's circuit breaker is open).",
            ("source", "result"),
        )
        self.dead: Counter = registry.counter(
            "webhooks_dead_letters_total", "Deliveries that went dead-letter.", ("source",)
        )
        self.delivery_seconds: Histogram = registry.histogram(
            "webhooks_delivery_latency_seconds",
            "From acceptance to successful delivery, retries included.",
            ("source",),
            DELIVERY_BUCKETS,
        )
        self.depth: Gauge = registry.gauge(
            "webhooks_outbox_depth",
            "Pending deliveries in the outbox, by source (as this worker last read it).",
            ("source",),
            per_worker=True,
        )
        self.oldest: Gauge = registry.gauge(
            "webhooks_outbox_oldest_age_seconds",
            "Age of the oldest pending delivery, by source.",
            ("source",),
            per_worker=True,
        )
