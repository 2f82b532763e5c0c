"""Requests answered per route, by status class, from the gateway's own counters (read
when asked: nothing is counted for the admin API). Totals since each worker started;
a rate is two reads apart (`potok status` does that)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from potok.observability.metrics import GatewayMetrics


def report(metrics: GatewayMetrics) -> dict[str, dict[str, float]]:
    routes: dict[str, dict[str, float]] = {}
    for (_method, route, status), count in metrics.requests.current().items():
        into = routes.setdefault(
            route, {"requests": 0.0, "2xx": 0.0, "3xx": 0.0, "4xx": 0.0, "5xx": 0.0}
        )
        into["requests"] += count
        kind = f"{status[:1]}xx"
        if kind in into:
            into[kind] += count
    return routes


def merge(per_worker: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    merged: dict[str, dict[str, float]] = {}
    for routes in per_worker.values():
        for route, counts in routes.items():
            into = merged.setdefault(route, dict.fromkeys(counts, 0.0))
            for name, value in counts.items():
                into[name] = into.get(name, 0.0) + value
    return {
        route: {k: int(v) for k, v in counts.items()} for route, counts in sorted(merged.items())
    }
