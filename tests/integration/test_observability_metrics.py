"""Every metric the Grafana dashboard and the alert rules in deploy/observability/ query is
exported by a real gateway, and every metric the gateway exports is on the dashboard.

One gateway with the features whose metrics exist only when configured: a route with a rate
limit and the other policies that count refusals, a service whose breaker opens, load
shedding, and realtime (memory bus). The test drives each far enough to produce samples,
scrapes /api/v1/metrics and compares names (a histogram's `_bucket`, `_sum` and `_count`
series and a counter's `_total` count as its family's)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.net import request
from tests.support.observability import exported, family, used_names
from tests.support.realtime import Client, publish, realtime_config, token
from tests.support.upstream import Upstream

# Names that must have a sample after the traffic below, not only a # TYPE line: the ones
# the alerts read, and one of each feature's.
MUST_HAVE_SAMPLES = {
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    "http_requests_in_flight",
    "http_requests_shed_total",
    "event_loop_lag_seconds",
    "upstream_request_duration_seconds_bucket",
    "circuit_breaker_state",
    "circuit_breaker_transitions_total",
    "upstream_breaker_rejected_total",
    "upstream_target_healthy",
    "rate_limit_decisions_total",
    "websocket_connections_total",
    "websocket_connections_active",
    "realtime_events_published_total",
    "realtime_fanout_latency_seconds_bucket",
}


def config(healthy: str, failing: str) -> dict[str, Any]:
    return {
        "server": {"overload": {"max_in_flight": 2}},
        "services": {
            "up": {"targets": [healthy]},
            "flaky": {
                "targets": [failing],
                "retry": {"attempts": 1},
                "passive_ejection": None,
                "circuit_breaker": {"consecutive_failures": 2, "open_for": "60s"},
            },
        },
        "routes": [
            {
                "name": "limited",
                "match": {"prefix": "/limited"},
                "service": "up",
                "strip_prefix": True,
                "policies": {
                    "rate_limit": {"limit": 3, "window": "60s"},
                    "concurrency_limit": {"max": 50},
                    "ip_filter": {"allow": ["127.0.0.0/8"]},
                    "cors": {"allow_origins": ["https://app.example.com"]},
                    "validate": {"query": {"type": "object"}},
                },
            },
            {"name": "flaky", "match": {"prefix": "/flaky"}, "service": "flaky"},
            {"name": "all", "match": {"prefix": "/"}, "service": "up"},
        ],
        **realtime_config(),
    }


@pytest.fixture
def failing() -> Iterator[Upstream]:
    server = Upstream()
    server.fail_with = 500
    yield server
    server.stop()


async def _realtime_traffic(port: int) -> None:
    client = await Client.open(port)
    await client.authenticate(token())
    assert (await client.subscribe("org:acme:tasks"))["type"] == "subscribed"
    response = publish(port, {"channel": "org:acme:tasks", "type": "task:created", "data": {}})
    assert response.status == 202
    await client.events(1)
    await client.close()


def _shed_one(gateway: GatewayProcess, upstream: Upstream) -> None:
    """Two slow requests fill max_in_flight; the third is shed."""
    holders = [
        threading.Thread(target=request, args=(gateway.port, "GET", "/slow?delay=1.5"))
        for _ in range(2)
    ]
    for holder in holders:
        holder.start()
    try:
        gateway.wait_for(lambda: upstream.hits["/slow"] >= 2, timeout=5)
        assert request(gateway.port, "GET", "/echo").status == 503
    finally:
        for holder in holders:
            holder.join(10)


async def test_dashboard_and_alerts_query_only_what_a_gateway_exports(upstream, failing):
    gateway = GatewayProcess(config(upstream.url, failing.url))
    try:
        assert request(gateway.port, "GET", "/echo").status == 200
        statuses = [request(gateway.port, "GET", "/limited/echo").status for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        # Two failures open the breaker; the third is answered at once.
        assert [request(gateway.port, "GET", "/flaky/x").status for _ in range(3)] == [
            500,
            500,
            503,
        ]
        await _realtime_traffic(gateway.port)
        _shed_one(gateway, upstream)
        scrape = request(gateway.port, "GET", "/api/v1/metrics").body.decode()
    finally:
        gateway.stop()

    declared, sampled = exported(scrape)
    used = used_names()
    assert "http_requests_total" in used and "circuit_breaker_state" in used  # parsed at all
    unknown = {name: sorted(where) for name, where in used.items() if name not in declared}
    assert unknown == {}, f"queried but not exported by the gateway: {unknown}"
    assert MUST_HAVE_SAMPLES - sampled == set()
    assert 'circuit_breaker_state{service="flaky",worker="0"} 1.0' in scrape
    assert 'http_requests_shed_total{reason="in_flight"} 1.0' in scrape
    assert 'result="limited",route="limited"} 1.0' in scrape
    # The other way round: a metric the gateway exports but no panel shows is a gap.
    families = {family(name) for name in used}
    undisplayed = {
        line.split()[2] for line in scrape.splitlines() if line.startswith("# TYPE ")
    } - families
    assert undisplayed == set(), f"exported but on no dashboard panel: {undisplayed}"
