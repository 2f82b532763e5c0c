"""Resilience through the real gateway: upstreams that fail, hang, reset, die and come back."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.load import LoadResult, run_load
from tests.support.net import ResponseReader, connect, request
from tests.support.target_process import TargetProcess


def service(*urls: str, **extra: object) -> dict[str, object]:
    return {"targets": list(urls), **extra}


def gateway_for(
    services: dict[str, object], routes: list[dict[str, object]] | None = None
) -> GatewayProcess:
    routes = routes or [
        {"name": name, "match": {"prefix": f"/{name}"}, "service": name, "strip_prefix": True}
        for name in services
    ]
    return GatewayProcess({"services": services, "routes": routes})


def metric(gateway: GatewayProcess, name: str, **labels: str) -> float:
    time.sleep(0.05)
    text = request(gateway.port, "GET", "/api/v1/metrics").body.decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_target_killed_mid_load_costs_no_client_errors(pair):
    a, b = pair
    gateway = gateway_for({"svc": service(a.url, b.url, retry={"backoff": {"initial": "10ms"}})})
    try:
        errors: list[tuple[float, int]] = []
        done = threading.Event()

        def client() -> None:
            while not done.is_set():
                status = request(gateway.port, "GET", "/svc/echo").status
                if status != 200:
                    errors.append((time.monotonic(), status))

        with ThreadPoolExecutor(8) as pool:
            for _ in range(8):
                pool.submit(client)
            time.sleep(0.5)
            before = b.total
            killed_at = time.monotonic()
            b.go_down()
            time.sleep(2.5)
            done.set()
        # The requests caught on the dying target at the moment it died may exceed the retry
        # budget (that is the budget working); after the detection window, nothing fails.
        late = [status for at, status in errors if at > killed_at + 1.0]
        assert late == [], f"{len(late)} client-visible errors after the detection window"
        assert len(errors) <= 8
        assert before > 50 and a.total > 100
        health = request(gateway.port, "GET", "/api/v1/health").json()["services"]["svc"]
        down = next(t for t in health["targets"] if t["target"].endswith(str(b.port)))
        assert down["healthy"] is False  # ejected: a refused connect needs no second opinion
        # The target's failures were retried away: the service's breaker stayed closed.
        assert health["breaker"] == "closed"
        assert metric(gateway, "upstream_retries_total", service="svc") >= 1
    finally:
        gateway.stop()


def test_breaker_lifecycle_with_upstream_counter(pair):
    a, _ = pair
    a.fail_with = 500
    gateway = gateway_for(
        {
            "svc": service(
                a.url,
                retry={"attempts": 1},
                passive_ejection=None,
                circuit_breaker={"open_for": "1s", "success_threshold": 2, "half_open_probes": 2},
            )
        }
    )
    try:
        for _ in range(5):
            assert request(gateway.port, "GET", "/svc/x").status == 500
        assert a.total == 5
        # Open: answered at once, the upstream is not contacted.
        fast = request(gateway.port, "GET", "/svc/x")
        assert fast.status == 503 and fast.header("retry-after") == "1"
        assert fast.json()["detail"].startswith("svc is failing")
        assert a.total == 5
        assert metric(gateway, "circuit_breaker_state", service="svc") == 1
        # Half-open after the open time: a failed probe re-opens.
        time.sleep(1.1)
        assert request(gateway.port, "GET", "/svc/x").status == 500
        assert a.total == 6
        assert request(gateway.port, "GET", "/svc/x").status == 503
        assert a.total == 6
        # Recovery: two successful probes close it.
        a.fail_with = None
        time.sleep(1.1)
        assert request(gateway.port, "GET", "/svc/x").status == 200
        assert metric(gateway, "circuit_breaker_state", service="svc") == 2
        assert request(gateway.port, "GET", "/svc/x").status == 200
        assert metric(gateway, "circuit_breaker_state", service="svc") == 0
        for _ in range(10):
            assert request(gateway.port, "GET", "/svc/x").status == 200
        assert (
            metric(gateway, "circuit_breaker_transitions_total", service="svc", state="open") == 2
        )
    finally:
        gateway.stop()


def test_breaker_trips_on_error_rate(pair):
    a, _ = pair
    gateway = gateway_for(
        {
            "svc": service(
                a.url,
                retry={"attempts": 1},
                passive_ejection=None,
                circuit_breaker={
                    "min_requests": 10,
                    "error_rate": 0.5,
                    "consecutive_failures": 100,
                },
            )
        }
    )
    try:
        statuses = []
        for index in range(12):
            path = (
                "/svc/status/500" if index % 3 != 2 else "/svc/echo"
            )  # 2 of 3 fail, never 5 in a row
            statuses.append(request(gateway.port, "GET", path).status)
        assert 503 in statuses[9:], statuses
        before = a.total
        assert request(gateway.port, "GET", "/svc/echo").status == 503
        assert a.total == before
    finally:
        gateway.stop()


def test_fallback_while_open(pair):
    a, _ = pair
    a.fail_with = 503
    gateway = gateway_for(
        {"svc": service(a.url, retry={"attempts": 1}, circuit_breaker={"consecutive_failures": 2})},
        [
            {
                "name": "svc",
                "match": {"prefix": "/svc"},
                "service": "svc",
                "fallback": {
                    "status": 200,
                    "body": '{"cached": false, "items": []}',
                    "headers": {"X-Fallback": "1"},
                },
            }
        ],
    )
    try:
        request(gateway.port, "GET", "/svc")
        request(gateway.port, "GET", "/svc")
        response = request(gateway.port, "GET", "/svc")
        assert response.status == 200 and response.json() == {"cached": False, "items": []}
        assert response.header("x-fallback") == "1"
    finally:
        gateway.stop()


def test_post_is_never_retried_without_idempotency_key(pair):
    a, _ = pair
    a.fail_with = 503
    gateway = gateway_for(
        {
            "svc": service(
                a.url,
                circuit_breaker=None,
                passive_ejection=None,
                retry={"attempts": 3, "backoff": {"initial": "1ms"}},
            )
        }
    )
    try:
        assert request(gateway.port, "POST", "/svc/orders", body=b'{"x":1}').status == 503
        assert a.total == 1
        keyed = request(
            gateway.port,
            "POST",
            "/svc/orders",
            body=b'{"x":1}',
            headers={"Idempotency-Key": "order-42"},
        )
        assert keyed.status == 503
        assert a.total == 1 + 3
        assert request(gateway.port, "GET", "/svc/orders").status == 503
        assert a.total == 1 + 3 + 3
    finally:
        gateway.stop()


def test_get_retried_on_another_target_succeeds(pair):
    a, b = pair
    a.fail_with = 502
    gateway = gateway_for(
        {
            "svc": service(
                a.url,
                b.url,
                retry={"backoff": {"initial": "1ms"}},
                circuit_breaker=None,
                passive_ejection=None,
            )
        }
    )
    try:
        for _ in range(20):
            assert request(gateway.port, "GET", "/svc/echo").status == 200
        assert a.total <= 20 and b.total == 20
        assert metric(gateway, "upstream_retries_total", service="svc", reason="502") == a.total
    finally:
        gateway.stop()


@pytest.mark.parametrize("targets", [1, 2], ids=["one-target", "every-target-of-two"])
def test_retry_budget_bounds_attempts_under_concurrent_load(pair, targets):
    # Retries to a target serving well skip the budget; here none is, so all are counted.
    failing = pair[:targets]
    for upstream in failing:
        upstream.fail_with = 503
    gateway = gateway_for(
        {
            "svc": service(
                *(upstream.url for upstream in failing),
                circuit_breaker=None,
                passive_ejection=None,
                retry={
                    "attempts": 5,
                    "backoff": {"initial": "50ms", "max": "50ms"},
                    "budget": {"ratio": 0.2, "min_concurrent": 2},
                },
            )
        }
    )
    try:
        requests_sent = 200
        with ThreadPoolExecutor(50) as pool:
            statuses = list(
                pool.map(
                    lambda _: request(gateway.port, "GET", "/svc/x").status, range(requests_sent)
                )
            )
        assert set(statuses) == {503}
        # Without a budget: 5 attempts each = 1,000. With it: retries stay a small share.
        attempts = sum(upstream.total for upstream in failing)
        assert attempts < requests_sent * 1.5, attempts
        assert metric(gateway, "upstream_retry_budget_exhausted_total", service="svc") > 0
    finally:
        gateway.stop()


def test_backoff_never_passes_the_request_deadline(pair):
    a, _ = pair
    a.fail_with = 503
    gateway = gateway_for(
        {
            "svc": service(
                a.url,
                circuit_breaker=None,
                passive_ejection=None,
                retry={"attempts": 10, "backoff": {"initial": "5s", "max": "5s"}},
            )
        },
        [
            {
                "name": "svc",
                "match": {"prefix": "/svc"},
                "service": "svc",
                "timeouts": {"request": "800ms"},
            }
        ],
    )
    try:
        started = time.monotonic()
        response = request(gateway.port, "GET", "/svc")
        elapsed = time.monotonic() - started
        assert response.status == 504
        assert 0.7 < elapsed < 1.3, elapsed
    finally:
        gateway.stop()


def test_active_health_checks_eject_and_readmit(pair):
    a, b = pair
    gateway = gateway_for(
        {
            "svc": service(
                a.url,
                b.url,
                passive_ejection=None,
                retry={"attempts": 1},
                health_check={
                    "path": "/health",
                    "interval": "200ms",
                    "timeout": "500ms",
                    "healthy_threshold": 2,
                    "unhealthy_threshold": 2,
                },
            )
        }
    )
    try:
        time.sleep(0.6)
        b.health_status = 500
        time.sleep(1.0)
        before = b.total - b.health_checks
        for _ in range(20):
            assert request(gateway.port, "GET", "/svc/echo").status == 200
        assert b.total - b.health_checks == before, "an unhealthy target got traffic"
        assert (
            metric(gateway, "upstream_target_healthy", service="svc", target=f"127.0.0.1:{b.port}")
            == 0
        )
        b.health_status = 200
        time.sleep(1.0)
        for _ in range(20):
            request(gateway.port, "GET", "/svc/echo")
        assert b.total - b.health_checks > before, "traffic did not come back"
    finally:
        gateway.stop()


def test_bulkhead_isolates_a_hanging_service(pair):
    a, b = pair
    gateway = gateway_for(
        {
            "slow": service(
                a.url,
                retry={"attempts": 1},
                circuit_breaker=None,
                bulkhead={"max_concurrent": 4, "max_queued": 0},
            ),
            "fast": service(b.url),
        }
    )
    try:
        from tests.support.net import build_request, connect

        hanging = []
        for _ in range(4):
            sock = connect(gateway.port)
            sock.sendall(build_request("GET", "/slow/hang"))
            hanging.append(sock)
        time.sleep(0.3)
        refused = request(gateway.port, "GET", "/slow/echo")
        assert refused.status == 503 and refused.header("retry-after") == "1"
        for _ in range(20):
            assert request(gateway.port, "GET", "/fast/echo").status == 200
        for sock in hanging:
            sock.close()
        time.sleep(0.3)
        assert request(gateway.port, "GET", "/slow/echo").status == 200  # slots came back
        assert metric(gateway, "upstream_bulkhead_rejected_total", service="slow") == 1
    finally:
        gateway.stop()


def test_health_endpoint_shows_breaker_and_targets(pair):
    a, _ = pair
    gateway = gateway_for({"svc": service(a.url)})
    try:
        svc = request(gateway.port, "GET", "/api/v1/health").json()["services"]["svc"]
        assert svc["breaker"] == "closed"
        assert svc["targets"][0]["healthy"] is True
    finally:
        gateway.stop()


# A client's slowness is the client's failure -----------------------------------------


def test_clients_whose_body_never_arrives_cannot_open_the_breaker(upstream):
    """The attack of issue 13 item 1: requests announcing a body that never comes.

    They used to wait for the upstream's response timeout, get 504 and count as the
    upstream's failures: five opened the breaker for every client for 60 s.
    """
    gateway = gateway_for({"svc": service(upstream.url, timeouts={"response": "1s"})})
    try:
        silent = [connect(gateway.port) for _ in range(8)]
        leaving = [connect(gateway.port) for _ in range(4)]
        head = b"POST /svc/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"
        for sock in silent:
            sock.sendall(head)
        for sock in leaving:
            sock.sendall(head + b"abc")  # part of the body, then gone
        time.sleep(0.3)
        for sock in leaving:
            sock.close()
        started = time.monotonic()
        for sock in silent:
            response = ResponseReader(sock).read()
            assert response.status == 408, response
            assert response.header("content-type") == "application/problem+json"
            assert response.header("connection") == "close"
            sock.close()
        assert time.monotonic() - started < 3
        assert request(gateway.port, "GET", "/svc/echo").status == 200
        health = request(gateway.port, "GET", "/api/v1/health").json()["services"]["svc"]
        assert health["breaker"] == "closed"
        assert health["targets"][0]["healthy"] is True
        assert health["targets"][0]["in_flight"] == 0  # every upstream attempt was aborted
        assert metric(gateway, "circuit_breaker_state", service="svc") == 0
        assert metric(gateway, "circuit_breaker_transitions_total", service="svc") == 0
        assert metric(gateway, "upstream_retries_total", service="svc") == 0
        assert metric(gateway, "http_requests_total", route="svc", status="408") == 8
    finally:
        gateway.stop()


def test_a_slow_but_steady_body_is_not_cut_by_the_response_timeout(upstream):
    gateway = gateway_for({"svc": service(upstream.url, timeouts={"response": "1s"})})
    try:
        with connect(gateway.port) as sock:
            sock.sendall(b"POST /svc/sink HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
            for byte in b"hello":  # 2.5 s in all, a byte every 0.5 s: slow, never stalled
                time.sleep(0.5)
                sock.sendall(bytes([byte]))
            response = ResponseReader(sock).read()
        assert response.status == 200 and response.json()["length"] == 5
    finally:
        gateway.stop()


def test_a_trickling_body_past_the_route_deadline_is_408_and_not_the_upstreams_failure(upstream):
    """A byte every 0.3 s keeps the wait for the upstream alive; the route's deadline
    (1 s) ends it as the client's slowness: 408, the breaker and the target untouched."""
    routes = [
        {
            "name": "svc",
            "match": {"prefix": "/svc"},
            "service": "svc",
            "strip_prefix": True,
            "timeouts": {"request": "1s"},
        }
    ]
    gateway = gateway_for({"svc": service(upstream.url)}, routes)
    try:
        with connect(gateway.port) as sock:
            sock.sendall(b"POST /svc/sink HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n")
            sock.settimeout(0.3)
            response = None
            for _ in range(20):
                try:
                    sock.sendall(b"x")
                except OSError:
                    break
                try:
                    response = ResponseReader(sock).read()
                    break
                except TimeoutError:
                    continue
            sock.settimeout(5)
            response = response or ResponseReader(sock).read()
        assert response.status == 408, response
        assert response.header("content-type") == "application/problem+json"
        health = request(gateway.port, "GET", "/api/v1/health").json()["services"]["svc"]
        assert health["breaker"] == "closed"
        assert health["targets"][0]["in_flight"] == 0
        assert metric(gateway, "circuit_breaker_transitions_total", service="svc") == 0
    finally:
        gateway.stop()


# One bad target of two under load (items 8 and 9) -------------------------------------

LOAD = {"concurrency": 20, "rate": 300.0, "duration": 5.0}


def _two_target_gateway(bad: TargetProcess, good: TargetProcess, **extra: object) -> GatewayProcess:
    return gateway_for({"svc": service(bad.url, good.url, **extra)})


def _target_health(gateway: GatewayProcess, target: TargetProcess) -> dict[str, object]:
    health = request(gateway.port, "GET", "/api/v1/health").json()["services"]["svc"]
    found: dict[str, object] = next(t for t in health["targets"] if t["target"] == target.name)
    return found


def _assert_service_stayed_up(gateway: GatewayProcess, result: LoadResult) -> None:
    assert result.total >= 1000, result.total
    assert result.error_rate <= 0.001, (result.error_rate, result.errors[:10])
    health = request(gateway.port, "GET", "/api/v1/health").json()["services"]["svc"]
    assert health["breaker"] == "closed"
    assert metric(gateway, "circuit_breaker_state", service="svc") == 0
    assert metric(gateway, "circuit_breaker_transitions_total", service="svc", state="open") == 0


def test_one_of_two_targets_killed_under_load():
    bad, good = TargetProcess(), TargetProcess()
    gateway = _two_target_gateway(bad, good)
    try:
        result = asyncio.run(
            run_load(
                gateway.port,
                "/svc/x",
                **LOAD,  # type: ignore[arg-type]
                actions=(
                    (1.5, "killed", bad.kill),
                    (2.5, "a second later", lambda: _target_health(gateway, bad)),
                ),
            )
        )
        print(f"killed target: {len(result.errors)} errors of {result.total}")
        _assert_service_stayed_up(gateway, result)
        after = result.notes["a second later"]
        assert isinstance(after, dict) and after["healthy"] is False, after
        assert metric(gateway, "upstream_target_healthy", service="svc", target=bad.name) == 0
    finally:
        gateway.stop()
        bad.stop()
        good.stop()


def test_one_of_two_targets_frozen_under_load():
    bad, good = TargetProcess(), TargetProcess()
    gateway = _two_target_gateway(bad, good, timeouts={"response": "1s"})
    try:
        result = asyncio.run(
            run_load(
                gateway.port,
                "/svc/x",
                **{**LOAD, "duration": 6.0},  # type: ignore[arg-type]
                actions=((1.5, "frozen", bad.freeze),),
            )
        )
        print(f"frozen target: {len(result.errors)} errors of {result.total}")
        _assert_service_stayed_up(gateway, result)
        assert _target_health(gateway, bad)["healthy"] is False  # 5 timeouts in a row
        assert metric(gateway, "upstream_retries_total", service="svc", reason="timeout") >= 5
    finally:
        gateway.stop()
        bad.stop()
        good.stop()


def test_a_half_failing_target_next_to_a_healthy_one_leaks_no_errors():
    # Every other request to `bad` is a 503; no ejection, so it keeps failing all along.
    bad, good = TargetProcess(fail_every=2), TargetProcess()
    gateway = _two_target_gateway(bad, good, passive_ejection=None)
    try:
        result = asyncio.run(run_load(gateway.port, "/svc/x", **LOAD))  # type: ignore[arg-type]
        retried = metric(gateway, "upstream_retries_total", service="svc", reason="503")
        print(
            f"half-failing target: {len(result.errors)} errors of {result.total}, {retried} retried"
        )
        assert retried >= result.total / 8, retried  # a quarter of the requests, give or take
        assert result.errors == [], result.errors[:10]  # < 0.01 % of ~1,500
        assert metric(gateway, "upstream_retry_budget_exhausted_total", service="svc") == 0
        _assert_service_stayed_up(gateway, result)
    finally:
        gateway.stop()
        bad.stop()
        good.stop()


def test_the_breaker_still_opens_when_the_whole_service_fails(pair):
    a, b = pair
    a.fail_with = b.fail_with = 503
    gateway = gateway_for({"svc": service(a.url, b.url, retry={"backoff": {"initial": "1ms"}})})
    try:
        statuses = [request(gateway.port, "GET", "/svc/x").status for _ in range(8)]
        assert statuses[:5] == [503] * 5  # the upstreams' own 503s, after retries
        refused = request(gateway.port, "GET", "/svc/x")
        assert refused.status == 503 and "circuit breaker is open" in refused.json()["detail"]
        assert metric(gateway, "circuit_breaker_state", service="svc") == 1
    finally:
        gateway.stop()


def test_breaker_state_gauge_shows_half_open_when_the_open_time_is_over(pair):
    a, _ = pair
    a.fail_with = 500
    gateway = gateway_for(
        {
            "svc": service(
                a.url,
                retry={"attempts": 1},
                passive_ejection=None,
                circuit_breaker={"consecutive_failures": 2, "open_for": "1s"},
            )
        }
    )
    try:
        for _ in range(2):
            assert request(gateway.port, "GET", "/svc/x").status == 500
        assert metric(gateway, "circuit_breaker_state", service="svc") == 1
        time.sleep(1.2)  # no traffic: nothing moves the breaker, the scrape still tells
        assert metric(gateway, "circuit_breaker_state", service="svc") == 2
        health = request(gateway.port, "GET", "/api/v1/health").json()["services"]["svc"]
        assert health["breaker"] == "half_open" and health["breaker_retry_after_s"] == 0
    finally:
        gateway.stop()


def test_target_gauge_shows_a_target_back_when_its_ejection_ends(pair):
    a, b = pair
    b.go_down()
    gateway = gateway_for({"svc": service(a.url, b.url, passive_ejection={"base_ejection": "1s"})})
    try:
        for _ in range(4):
            assert request(gateway.port, "GET", "/svc/echo").status == 200
        name = f"127.0.0.1:{b.port}"
        assert metric(gateway, "upstream_target_healthy", service="svc", target=name) == 0
        time.sleep(1.2)  # no request since: the ejection ended with the clock alone
        assert metric(gateway, "upstream_target_healthy", service="svc", target=name) == 1
        health = request(gateway.port, "GET", "/api/v1/health").json()["services"]["svc"]
        assert next(t for t in health["targets"] if t["target"] == name)["healthy"] is True
    finally:
        gateway.stop()
