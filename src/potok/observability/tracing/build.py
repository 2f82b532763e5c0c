"""`tracing:` -> the runtime's Tracer (None when off: then tracing costs one test per
request), with the worker's exporter shared across reloads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from potok.observability.tracing.exporter import TraceExporter
from potok.observability.tracing.tracer import Tracer

if TYPE_CHECKING:
    from potok.observability.metrics import MetricsRegistry
    from potok.observability.tracing.config import TracingConfig
    from potok.resources import Resources
    from potok.upstream.forwarded import TrustedProxies


def build_tracer(
    config: TracingConfig,
    resources: Resources,
    trusted: TrustedProxies,
    metrics: MetricsRegistry | None = None,
) -> Tracer | None:
    if not config.enabled:
        return None

    def create() -> TraceExporter:
        exporter = TraceExporter(config, metrics)
        resources.on_close(exporter.close)
        return exporter

    # A reload that changes the export settings gets an exporter of its own; one that
    # changes only sampling keeps the thread and its queue.
    key = "tracing:" + config.model_dump_json(
        include={
            "endpoint",
            "headers",
            "timeout",
            "retry_for",
            "compression",
            "service_name",
            "batch",
        }
    )
    exporter: TraceExporter = resources.get(key, create)
    return Tracer(config, exporter, trusted)
