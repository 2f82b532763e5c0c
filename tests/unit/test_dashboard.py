"""The dashboard's numbers: per-route rates, 5xx ratio and p99 from two samples of the
real metrics registry (as PromQL's rate() and histogram_quantile() would give them), and
where /dashboard may sit beside user routes."""

from __future__ import annotations

import pytest
from prometheus_client.registry import CollectorRegistry

from potok.config.loader import cross_check
from potok.config.models import GatewayConfig
from potok.dashboard import rates
from potok.observability.metrics import MergedCollector, MetricsRegistry

LABELS = ("method", "route", "status")


def registry() -> tuple[MetricsRegistry, CollectorRegistry]:
    metrics = MetricsRegistry()
    metrics.counter("http_requests_total", "requests", LABELS)
    metrics.histogram("http_request_duration_seconds", "duration", ("method", "route"))
    metrics.counter("rate_limit_decisions_total", "decisions", ("route", "policy", "result"))
    prometheus = CollectorRegistry(auto_describe=True)
    prometheus.register(MergedCollector(metrics, None))
    return metrics, prometheus


def serve(metrics: MetricsRegistry, route: str, status: str, seconds: float, n: int) -> None:
    for _ in range(n):
        metrics.counters["http_requests_total"].inc(("GET", route, status))
        metrics.histograms["http_request_duration_seconds"].observe(("GET", route), seconds)


def test_rates_error_ratio_and_p99_over_the_window():
    metrics, prometheus = registry()
    serve(metrics, "api", "200", 0.003, 50)  # before the window: not in its numbers
    first = rates.sample(prometheus, at=100.0)
    serve(metrics, "api", "200", 0.003, 90)
    serve(metrics, "api", "503", 0.003, 5)
    serve(metrics, "api", "200", 0.7, 5)  # the slow tail: p99 falls in (0.5, 1.0]
    metrics.counters["rate_limit_decisions_total"].inc(("api", "ip", "limited"), 6)
    second = rates.sample(prometheus, at=102.0)

    (api,) = rates.rates(first, second)
    assert api.route == "api"
    assert api.requests_total == 150
    assert api.rps == pytest.approx(50.0)  # 100 requests in 2 s
    assert api.error_rate == pytest.approx(0.05)
    # Rank 99 of 100: 95 in (0.0025, 0.005], 5 in (0.5, 1.0]; linear inside the bucket.
    assert api.p99_ms == pytest.approx((0.5 + 0.5 * (99 - 95) / 5) * 1000)
    assert api.limited_rps == pytest.approx(3.0)


def test_the_first_sample_has_totals_but_no_rates():
    metrics, prometheus = registry()
    serve(metrics, "api", "200", 0.01, 3)
    (api,) = rates.rates(None, rates.sample(prometheus, at=1.0))
    assert api.requests_total == 3
    assert (api.rps, api.error_rate, api.p99_ms) == (None, None, None)


def test_a_quiet_window_has_a_zero_rate_and_no_ratio_or_p99():
    metrics, prometheus = registry()
    serve(metrics, "api", "200", 0.01, 3)
    first = rates.sample(prometheus, at=1.0)
    (api,) = rates.rates(first, rates.sample(prometheus, at=3.0))
    assert api.rps == 0.0
    assert (api.error_rate, api.p99_ms) == (None, None)


def test_a_counter_that_went_down_counts_from_zero():
    # A restarted worker's counters start again: the window counts what the new one has.
    before = rates.Sample(at=0.0, requests={"api": 1000.0}, buckets={"api": {float("inf"): 1000.0}})
    after = rates.Sample(
        at=10.0,
        requests={"api": 20.0},
        buckets={"api": {0.01: 20.0, float("inf"): 20.0}},
    )
    (api,) = rates.rates(before, after)
    assert api.rps == pytest.approx(2.0)
    assert api.p99_ms is not None and 0 < api.p99_ms <= 10.0


def _config(public: bool) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "admin": {"public": public},
            "services": {"app": {"targets": ["http://127.0.0.1:9"]}},
            "routes": [{"match": {"prefix": "/dashboard"}, "service": "app"}],
        }
    )


def test_a_user_route_may_have_dashboard_unless_the_admin_api_is_public():
    assert cross_check(_config(public=False)) == []
    problems = cross_check(_config(public=True))
    assert problems == [("routes[0].match", "takes over the gateway's own endpoint /dashboard")]
