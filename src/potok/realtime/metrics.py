"""Realtime metrics; the label sets are bounded (transport, bus backend, fixed reasons)."""

from __future__ import annotations

from potok.observability.metrics import Counter, Gauge, Histogram, MetricsRegistry

FANOUT_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
)  # fmt: skip


class RealtimeMetrics:
    def __init__(self, registry: MetricsRegistry | None) -> None:
        registry = registry if registry is not None else MetricsRegistry()
        self.active_count = {"websocket": 0, "socketio": 0}
        self.active: Gauge = registry.gauge(
            "websocket_connections_active", "Open realtime connections.", ("transport",)
        )
        self.total: Counter = registry.counter(
            "websocket_connections_total", "Realtime connections accepted.", ("transport",)
        )
        self.messages_in: Counter = registry.counter(
            "websocket_messages_in_total", "Messages received from clients.", ("transport",)
        )
        self.messages_out: Counter = registry.counter(
            "websocket_messages_out_total", "Event messages sent to clients.", ("transport",)
        )
        self.fanout: Histogram = registry.histogram(
            "realtime_fanout_latency_seconds",
            "From an event's publish time to its last write to this worker's subscribers.",
            (),
            FANOUT_BUCKETS,
        )
        self.slow_consumers: Counter = registry.counter(
            "websocket_slow_consumer_disconnects_total",
            "Connections closed with 1013 because they did not keep up.",
            ("transport",),
        )
        self.bus_errors: Counter = registry.counter(
            "realtime_bus_errors_total",
            "Event bus failures: lost connections, failed publishes, malformed events.",
            ("bus", "kind"),
        )
        self.events: Counter = registry.counter(
            "realtime_events_total",
            "Events received from the bus, by outcome (delivered, duplicate, no_subscribers).",
            ("outcome",),
        )
        self.published: Counter = registry.counter(
            "realtime_events_published_total",
            "Events published through this worker, by source (http, websocket, socketio).",
            ("source",),
        )

    def opened(self, transport: str) -> None:
        self.active_count[transport] += 1
        self.active.set((transport,), self.active_count[transport])
        self.total.inc((transport,))

    def closed(self, transport: str) -> None:
        self.active_count[transport] -= 1
        self.active.set((transport,), self.active_count[transport])
