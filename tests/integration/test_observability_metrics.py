"""Every metric the Grafana dashboard and the alert rules in deploy/observability/ query is
exported by a real gateway, with the labels they match and group by; and every metric the
gateway exports is on the dashboard.

One gateway with the features whose metrics exist only when configured: a rate limit (in
Redis), the other policies that count refusals, a service whose breaker opens, one with a
dead target (retries), one found by DNS, load shedding and realtime (memory bus). The test
drives each far enough to produce samples, scrapes /api/v1/metrics and compares names (a
histogram's `_bucket`, `_sum` and `_count` series and a counter's `_total` count as its
family's) and, for the metrics that have samples, label names."""

from __future__ import annotations

import base64
import signal
import tempfile
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.net import connect, free_port, recv_until_close, request
from tests.support.observability import (
    TARGET_LABELS,
    dashboard_exprs,
    exported,
    family,
    label_names,
    metric_names,
    rule_exprs,
    scraped_labels,
    used_names,
)
from tests.support.realtime import Client, publish, realtime_config, token
from tests.support.upstream import Upstream

WEBHOOK_SECRET = "observability-webhook-secret"

# Names that must have a sample after the traffic below, not only a # TYPE line.
MUST_HAVE_SAMPLES = {
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    "http_requests_in_flight",
    "http_requests_refused_total",
    "http_requests_shed_total",
    "event_loop_lag_seconds",
    "config_reloads_total",
    "upstream_request_duration_seconds_bucket",
    "upstream_connect_duration_seconds_bucket",
    "upstream_retries_total",
    "circuit_breaker_state",
    "circuit_breaker_transitions_total",
    "upstream_breaker_rejected_total",
    "upstream_target_healthy",
    "upstream_dns_resolving",
    "upstream_dns_addresses",
    "rate_limit_decisions_total",
    "redis_operations_duration_seconds_bucket",
    "ip_filter_denied_total",
    "cors_rejections_total",
    "validation_failures_total",
    "websocket_connections_total",
    "websocket_connections_active",
    "websocket_messages_in_total",
    "websocket_messages_out_total",
    "realtime_events_total",
    "realtime_events_published_total",
    "realtime_fanout_latency_seconds_bucket",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
    "python_gc_collections_total",
    "python_gc_objects_collected_total",
    "python_gc_objects_uncollectable_total",
}
# Declared by the running gateway, but with no sample here: what makes them count is an
# overload or a failure this test does not cause (their labels are checked by the unit
# tests of the components that count them).
NOT_DRIVEN = {
    "grpc_calls_total",  # a gRPC route's calls: tests/integration/test_grpc_proxy.py
    "upstream_retry_budget_exhausted_total",
    "upstream_bulkhead_rejected_total",
    "upstream_tls_failures_total",
    "rate_limit_store_errors_total",
    "concurrency_limit_rejections_total",
    "websocket_slow_consumer_disconnects_total",
    "realtime_bus_errors_total",
    # A duplicate, a dead letter, a failed store need a replay, hours of retries, a broken
    # disk; the outbox gauges are read on the forwarder's schedule, after this test.
    "webhooks_duplicates_total",
    "webhooks_dead_letters_total",
    "webhooks_store_failures_total",
    "webhooks_outbox_depth",
    "webhooks_outbox_oldest_age_seconds",
}


def config(healthy: Upstream, failing: Upstream) -> dict[str, Any]:
    dead = f"http://127.0.0.1:{free_port()}"

    def route(name: str, service: str, **policies: Any) -> dict[str, Any]:
        return {
            "name": name,
            "match": {"prefix": f"/{name}"},
            "service": service,
            "strip_prefix": True,
            "policies": policies,
        }

    return {
        "server": {"overload": {"max_in_flight": 2}},
        "redis": {"url": "redis://127.0.0.1:6379/0", "key_prefix": f"obs-{uuid.uuid4().hex}:"},
        "services": {
            "up": {"targets": [healthy.url]},
            "flaky": {
                "targets": [failing.url],
                "retry": {"attempts": 1},
                "passive_ejection": None,
                "circuit_breaker": {"consecutive_failures": 2, "open_for": "60s"},
            },
            "half-dead": {"targets": [dead, healthy.url], "passive_ejection": None},
            "named": {"targets": [f"http://localhost:{healthy.port}"], "dns": {}},
            "up-v2": {"targets": [healthy.url]},
            "shadow": {"targets": [healthy.url]},
        },
        "routes": [
            route("limited", "up", rate_limit={"limit": 3, "window": "60s", "store": "redis"}),
            route(
                "checked",
                "up",
                concurrency_limit={"max": 50},
                cors={"allow_origins": ["https://app.example.com"]},
                validate={"query": {"type": "object", "properties": {"page": {"type": "integer"}}}},
            ),
            route("denied", "up", ip_filter={"deny": ["127.0.0.0/8"]}),
            route("flaky", "flaky"),
            route("half-dead", "half-dead"),
            route("cached", "up", cache={}),
            route(
                "shared", "up", cache={"store": "redis", "redis_prefix": f"obs-{uuid.uuid4().hex}:"}
            ),
            {
                "name": "weighted",
                "match": {"prefix": "/weighted"},
                "services": [{"name": "up", "weight": 1}, {"name": "up-v2", "weight": 1}],
                "strip_prefix": True,
            },
            {**route("mirrored", "up"), "mirror": {"service": "shadow"}},
            {"name": "all", "match": {"prefix": "/"}, "service": "up"},
        ],
        "webhooks": {
            "outbox": {"url": f"sqlite:///{tempfile.mkdtemp()}/outbox.db"},
            "delivery": {"signing_secret": "whsec_" + base64.b64encode(b"o" * 32).decode()},
            "sources": {
                "obs": {
                    "preset": "max_bot",
                    "secrets": [WEBHOOK_SECRET],
                    "service": "up",
                    "upstream_path": "/echo",
                }
            },
        },
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


def _refused(port: int) -> bytes:
    """A request line no parser accepts: refused before routing."""
    with connect(port) as sock:
        sock.sendall(b"NOT A REQUEST\r\n\r\n")
        return recv_until_close(sock)


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


def _reloaded(gateway: GatewayProcess) -> None:
    gateway.signal(signal.SIGHUP)
    gateway.wait_for(
        lambda: (
            "config_reloads_total{" in request(gateway.port, "GET", "/api/v1/metrics").body.decode()
        ),
        timeout=10,
    )


def _traffic(gateway: GatewayProcess, upstream: Upstream) -> None:
    port = gateway.port
    assert request(port, "GET", "/echo").status == 200
    assert [request(port, "GET", "/limited/echo").status for _ in range(4)] == [200] * 3 + [429]
    # Two failures open the breaker; the third is answered at once.
    assert [request(port, "GET", "/flaky/x").status for _ in range(3)] == [500, 500, 503]
    # Round robin over a dead and a live target: whichever comes first, one of two
    # requests meets the dead one and is retried on the other.
    assert [request(port, "GET", "/half-dead/echo").status for _ in range(2)] == [200, 200]
    assert request(port, "GET", "/checked/echo?page=x").status == 422
    assert request(port, "GET", "/checked/echo", {"Origin": "https://evil.example"}).status == 200
    assert request(port, "GET", "/denied/echo").status == 403
    assert _refused(port).startswith(b"HTTP/1.1 400")
    # Cache: a miss, then a hit.
    cacheable = "/cached/headers?Cache-Control=max-age%3D60"
    statuses = [request(port, "GET", cacheable).header("Cache-Status") or "" for _ in range(2)]
    assert statuses[0].startswith("potok; fwd=uri-miss") and statuses[1].startswith("potok; hit")
    assert [request(port, "GET", f"/weighted/echo/{n}").status for n in range(4)] == [200] * 4
    assert request(port, "GET", "/mirrored/echo").status == 200
    hook = "/api/v1/webhooks/obs"
    assert (
        request(port, "POST", hook, {"X-Max-Bot-Api-Secret": WEBHOOK_SECRET}, b"{}").status == 200
    )
    assert request(port, "POST", hook, {"X-Max-Bot-Api-Secret": "wrong" * 4}, b"{}").status == 401


def _label_problems(scrape: str) -> tuple[list[str], set[str]]:
    """Labels an expression matches or groups by that its metrics' samples lack; and the
    metrics whose labels could not be checked (no sample)."""
    have = scraped_labels(scrape)
    problems, unchecked = [], set()
    for expr in [*dashboard_exprs(), *rule_exprs()]:
        names = metric_names(expr)
        if not names <= have.keys():
            unchecked |= names - have.keys()
            continue
        matched, grouped = label_names(expr)
        for metric, labels in matched.items():
            if extra := labels - have[metric] - TARGET_LABELS:
                problems.append(f"{metric} has no {sorted(extra)}: {expr}")
        available = set().union(*(have[name] for name in names)) | TARGET_LABELS
        if missing := grouped - available:
            problems.append(f"no {sorted(missing)} to group by: {expr}")
    return problems, unchecked


async def test_dashboard_and_alerts_query_only_what_a_gateway_exports(upstream, failing):
    gateway = GatewayProcess(config(upstream, failing))
    try:
        _traffic(gateway, upstream)
        await _realtime_traffic(gateway.port)
        _shed_one(gateway, upstream)
        _reloaded(gateway)
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
    problems, unchecked = _label_problems(scrape)
    assert problems == []
    assert unchecked == {name for name in used if family(name) in NOT_DRIVEN or name in NOT_DRIVEN}
    # The other way round: a metric the gateway exports but no panel shows is a gap.
    families = {family(name) for name in used}
    undisplayed = {
        line.split()[2] for line in scrape.splitlines() if line.startswith("# TYPE ")
    } - families
    assert undisplayed == set(), f"exported but on no dashboard panel: {undisplayed}"
