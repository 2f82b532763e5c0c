"""Per-route traffic from the gateway's own Prometheus registry, as rates over the time
between two samples (like PromQL's `rate()` and `histogram_quantile()` over that window).

The registry is the one /api/v1/metrics serves (merged over every worker), read only
when a dashboard asks: nothing is counted on the data plane for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

REQUESTS = "http_requests"  # the counter family's name (prometheus_client drops `_total`)
DURATION = "http_request_duration_seconds"
RATE_LIMITS = "rate_limit_decisions"
WEBSOCKETS = "websocket_connections_active"
LIMITED = frozenset({"limited", "error_denied"})


@dataclass
class Sample:
    """Cumulative values per route at one moment."""

    at: float
    requests: dict[str, float] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)  # 5xx answers
    limited: dict[str, float] = field(default_factory=dict)  # rate-limit refusals
    # Per route: (upper bound, cumulative count) buckets summed over methods.
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)
    websockets: float = 0.0


def sample(registry: CollectorRegistry, at: float) -> Sample:
    """Read the registry once (merged over the workers, like a scrape)."""
    taken = Sample(at)
    for family in registry.collect():
        if family.name == REQUESTS:
            for metric in family.samples:
                if not metric.name.endswith("_total"):
                    continue  # the `_created` companion
                route = metric.labels.get("route", "")
                _add(taken.requests, route, metric.value)
                if metric.labels.get("status", "").startswith("5"):
                    _add(taken.errors, route, metric.value)
        elif family.name == DURATION:
            for metric in family.samples:
                if metric.name.endswith("_bucket"):
                    bound = float(metric.labels["le"])
                    row = taken.buckets.setdefault(metric.labels.get("route", ""), {})
                    row[bound] = row.get(bound, 0.0) + metric.value
        elif family.name == RATE_LIMITS:
            for metric in family.samples:
                if metric.name.endswith("_total") and metric.labels.get("result") in LIMITED:
                    _add(taken.limited, metric.labels.get("route", ""), metric.value)
        elif family.name == WEBSOCKETS:
            taken.websockets = sum(metric.value for metric in family.samples)
    return taken


def _add(into: dict[str, float], key: str, value: float) -> None:
    into[key] = into.get(key, 0.0) + value


@dataclass(frozen=True)
class RouteRates:
    route: str
    requests_total: int
    rps: float | None  # None on the first sample: a rate needs two
    error_rate: float | None  # 5xx share of the window's requests; None without requests
    p99_ms: float | None  # over the window; None without requests
    limited_rps: float | None

    def document(self) -> dict[str, object]:
        return {
            "route": self.route,
            "requests_total": self.requests_total,
            "rps": _round(self.rps),
            "error_rate": _round(self.error_rate, 4),
            "p99_ms": _round(self.p99_ms),
            "limited_rps": _round(self.limited_rps),
        }


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def rates(previous: Sample | None, current: Sample) -> list[RouteRates]:
    """Every route the current sample knows, in name order."""
    routes = sorted(set(current.requests) | set(current.limited))
    window = current.at - previous.at if previous is not None else 0.0
    out = []
    for route in routes:
        total = current.requests.get(route, 0.0)
        if previous is None or window <= 0:
            out.append(RouteRates(route, int(total), None, None, None, None))
            continue
        # A counter that went down is a restarted worker's: count from zero (as rate() does).
        requests = _delta(previous.requests.get(route, 0.0), total)
        errors = _delta(previous.errors.get(route, 0.0), current.errors.get(route, 0.0))
        limited = _delta(previous.limited.get(route, 0.0), current.limited.get(route, 0.0))
        buckets = _bucket_deltas(previous.buckets.get(route, {}), current.buckets.get(route, {}))
        out.append(
            RouteRates(
                route,
                int(total),
                requests / window,
                min(errors / requests, 1.0) if requests > 0 else None,
                _p99_ms(buckets) if requests > 0 else None,
                limited / window,
            )
        )
    return out


def _p99_ms(buckets: list[tuple[float, float]]) -> float | None:
    value = _quantile(0.99, buckets) if buckets else math.nan
    return None if math.isnan(value) else value * 1000


def _delta(before: float, after: float) -> float:
    return after - before if after >= before else after


def _bucket_deltas(
    before: dict[float, float], after: dict[float, float]
) -> list[tuple[float, float]]:
    if any(after.get(bound, 0.0) < count for bound, count in before.items()):
        before = {}  # reset (a restarted worker): the whole current histogram
    return [(bound, after[bound] - before.get(bound, 0.0)) for bound in sorted(after)]


def _quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's histogram_quantile: linear within the bucket the rank falls in; the
    highest finite bound when it falls in +Inf."""
    total = buckets[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound
