"""Workers, metrics across processes, health probes, and the SIGTERM drain."""

from __future__ import annotations

import re
import signal
import threading
import time

import pytest

from tests.support.gateway import GatewayProcess, simple_config
from tests.support.net import ResponseReader, build_request, connect, request


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def workers_of(gateway: GatewayProcess) -> list:
    import psutil

    workers = []
    for child in psutil.Process(gateway.process.pid).children():
        try:
            if "resource_tracker" not in " ".join(child.cmdline()):
                workers.append(child)
        except psutil.NoSuchProcess:  # includes zombies: a worker that just died
            continue
    return workers


def test_metrics_are_correct_with_two_workers(upstream):
    config = simple_config(upstream.url)
    # Plain pass-through: no retries or breaker, so every request is one upstream call.
    config["services"]["up"].update({"retry": {"attempts": 1}, "circuit_breaker": None})
    gateway = GatewayProcess(config, workers=2)
    try:
        # Separate connections spread over both workers (SO_REUSEPORT hashes by port).
        for _ in range(200):
            assert request(gateway.port, "GET", "/echo").status == 200
        for _ in range(30):
            assert request(gateway.port, "GET", "/status/503").status == 503
        time.sleep(1.5)  # each worker publishes its counters once a second
        pids_seen = set()
        text = ""
        for _ in range(10):
            response = request(gateway.port, "GET", "/api/v1/metrics")
            text = response.body.decode()
            assert metric(text, "http_requests_total", route="all", status="200") == 200
            assert metric(text, "http_requests_total", route="all", status="503") == 30
            assert metric(text, "http_request_duration_seconds_count", route="all") == 230
            assert metric(text, "upstream_request_duration_seconds_count", service="up") == 230
            pids_seen.add(response.header("x-request-id"))
        assert "http_requests_in_flight" in text
    finally:
        assert gateway.stop() == 0


def test_two_workers_both_serve(upstream):
    gateway = GatewayProcess(simple_config(upstream.url), workers=2)
    try:
        gateway.wait_for(lambda: len(workers_of(gateway)) == 2, timeout=10)
        children = workers_of(gateway)
        before = {c.pid: c.cpu_times().user for c in children}
        for _ in range(400):
            request(gateway.port, "GET", "/echo")
        after = {c.pid: c.cpu_times().user for c in children}
        assert all(after[pid] > before[pid] for pid in before)
    finally:
        assert gateway.stop() == 0


def test_a_killed_worker_is_replaced(upstream):
    gateway = GatewayProcess(simple_config(upstream.url), workers=2)
    try:
        # The supervisor listens before it forks the workers: the port may open first.
        gateway.wait_for(lambda: len(workers_of(gateway)) == 2, timeout=10)
        victim = workers_of(gateway)[0]
        victim.kill()
        gateway.wait_for(
            lambda: len([c for c in workers_of(gateway) if c.pid != victim.pid]) == 2, timeout=10
        )
        for _ in range(20):
            assert request(gateway.port, "GET", "/echo").status == 200
    finally:
        gateway.stop()


def test_health_endpoints(upstream, start_gateway):
    gateway = start_gateway(simple_config(upstream.url))
    assert request(gateway.port, "GET", "/api/v1/health/liveness").json() == {"status": "ok"}
    assert request(gateway.port, "GET", "/api/v1/health/readiness").json() == {"status": "ready"}
    health = request(gateway.port, "GET", "/api/v1/health").json()
    assert health["status"] == "ok" and "up" in health["services"]
    assert request(gateway.port, "GET", "/api/openapi.json").json()["info"]["title"]


def test_sigterm_drains_in_flight_requests_and_exits_zero(upstream):
    config = simple_config(upstream.url)
    config["server"] = {"timeouts": {"shutdown_grace": "10s", "shutdown_delay": "1s"}}
    gateway = GatewayProcess(config)
    results: list[int] = []

    def slow_call() -> None:
        results.append(request(gateway.port, "GET", "/slow?delay=2", timeout=10).status)

    threads = [threading.Thread(target=slow_call) for _ in range(5)]
    for thread in threads:
        thread.start()
    # An idle keep-alive connection, which must be closed by the drain.
    idle = connect(gateway.port)
    idle.sendall(build_request("GET", "/echo"))
    ResponseReader(idle).read()
    time.sleep(0.5)
    started = time.monotonic()
    gateway.signal(signal.SIGTERM)
    time.sleep(0.3)
    # Readiness turns 503 at once (during shutdown_delay the listener still accepts).
    assert request(gateway.port, "GET", "/api/v1/health/readiness").status == 503
    for thread in threads:
        thread.join(15)
    assert results == [200] * 5
    assert gateway.process.wait(15) == 0
    assert time.monotonic() - started < 8
    idle.settimeout(2)
    assert idle.recv(10) == b""
    with pytest.raises(OSError):
        connect(gateway.port, timeout=1)
    gateway.stop()


def test_sigterm_grace_period_cuts_hanging_requests(upstream):
    config = simple_config(upstream.url)
    config["server"] = {"timeouts": {"shutdown_grace": "1s"}}
    gateway = GatewayProcess(config)
    sock = connect(gateway.port)
    sock.sendall(build_request("GET", "/hang"))
    time.sleep(0.3)
    started = time.monotonic()
    gateway.signal(signal.SIGTERM)
    assert gateway.process.wait(10) == 0
    assert time.monotonic() - started < 4
    sock.close()
    gateway.stop()


def test_access_log_written_on_shutdown(upstream):
    gateway = GatewayProcess(simple_config(upstream.url))
    request(gateway.port, "GET", "/echo", headers={"X-Request-ID": "last-one"})
    assert gateway.stop() == 0
    assert any(e["request_id"] == "last-one" for e in gateway.access_log())


def test_invalid_config_refuses_to_start(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "bad.yaml"
    path.write_text("routes:\n  - match: {prefix: nope}\n    service: ghost\n")
    result = subprocess.run(
        [sys.executable, "-m", "potok", "run", "-c", str(path)],
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert re.search(r"routes\[0\]\.match\.prefix: .*must start with '/'", result.stderr)
