"""Config hot reload through the real gateway: SIGHUP, a watched file, --workers 2."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.net import ResponseReader, build_request, connect, request


def config(routes: dict[str, str], services: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Prefix routes `/name` -> service (prefix stripped)."""
    return {
        "services": services,
        "routes": [
            {"name": name, "match": {"prefix": f"/{name}"}, "service": svc, "strip_prefix": True}
            for name, svc in routes.items()
        ],
        **extra,
    }


def health(gateway: GatewayProcess) -> dict[str, Any]:
    body = request(gateway.port, "GET", "/api/v1/health").json()
    assert isinstance(body, dict)
    return body


def reloads(gateway: GatewayProcess, result: str) -> float:
    text = request(gateway.port, "GET", "/api/v1/metrics").body.decode()
    prefix = f'config_reloads_total{{result="{result}"'
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


def sighup_and_wait(gateway: GatewayProcess, result: str = "applied") -> None:
    before = reloads(gateway, result)
    gateway.signal(signal.SIGHUP)
    gateway.wait_for(lambda: reloads(gateway, result) > before, timeout=10)


def test_sighup_adds_and_removes_routes_and_targets(pair):
    a, b = pair
    gateway = GatewayProcess(config({"one": "svc"}, {"svc": {"targets": [a.url]}}))
    try:
        digest = health(gateway)["config"]["digest"]
        assert request(gateway.port, "GET", "/one/echo").status == 200
        assert request(gateway.port, "GET", "/two/echo").status == 404
        gateway.write_config(
            config(
                {"two": "svc", "three": "other"},
                {"svc": {"targets": [b.url]}, "other": {"targets": [a.url]}},
            )
        )
        sighup_and_wait(gateway)
        assert request(gateway.port, "GET", "/one/echo").status == 404
        before_a, before_b = a.total, b.total
        assert request(gateway.port, "GET", "/two/echo").status == 200
        assert (a.total, b.total) == (before_a, before_b + 1)  # svc's target is now b
        assert request(gateway.port, "GET", "/three/echo").status == 200
        assert a.total == before_a + 1
        after = health(gateway)
        assert after["config"]["digest"] != digest
        assert set(after["services"]) == {"svc", "other"}
        assert gateway.process.poll() is None
        assert "config reloaded" in gateway.stderr()
    finally:
        gateway.stop()


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ("services: [not, a, mapping", "invalid YAML"),
        ("routes:\n  - match: {prefix: /x}\n    service: missing\n", "routes[0]"),
        (None, "server.port: changing it needs a restart"),
    ],
)
def test_a_bad_config_is_refused_and_the_old_one_keeps_serving(pair, bad, named):
    a, _ = pair
    good = config({"one": "svc"}, {"svc": {"targets": [a.url]}})
    gateway = GatewayProcess(good)
    try:
        digest = health(gateway)["config"]["digest"]
        if bad is None:  # a valid file whose change only a restart can apply
            text = gateway.config_path.read_text()
            gateway.config_path.write_text(text.replace(f"port: {gateway.port}", "port: 1"))
        else:
            gateway.config_path.write_text(bad)
        sighup_and_wait(gateway, "refused")
        assert request(gateway.port, "GET", "/one/echo").status == 200
        assert health(gateway)["config"]["digest"] == digest
        assert "config reload refused" in gateway.stderr()
        assert named in gateway.stderr()
        # Fixed again: the next reload applies.
        gateway.write_config({**good, "routes": [*good["routes"], _route("two", "svc")]})
        sighup_and_wait(gateway)
        assert request(gateway.port, "GET", "/two/echo").status == 200
    finally:
        gateway.stop()


def _route(name: str, service: str) -> dict[str, Any]:
    return {"name": name, "match": {"prefix": f"/{name}"}, "service": service, "strip_prefix": True}


def test_reload_drops_no_connection_and_no_request_in_flight(pair):
    a, b = pair
    gateway = GatewayProcess(config({"one": "svc"}, {"svc": {"targets": [a.url]}}))
    try:
        # A keep-alive connection used before the reload, and a slow request across it.
        keepalive = connect(gateway.port)
        reader = ResponseReader(keepalive)
        keepalive.sendall(build_request("GET", "/one/echo"))
        assert reader.read().status == 200
        slow: dict[str, int] = {}

        def slow_request() -> None:
            slow["status"] = request(gateway.port, "GET", "/one/slow?delay=1.5").status

        thread = threading.Thread(target=slow_request)
        thread.start()
        time.sleep(0.3)  # the slow request is at the upstream now
        gateway.write_config(config({"one": "svc"}, {"svc": {"targets": [b.url]}}))
        sighup_and_wait(gateway)
        thread.join(10)
        assert slow == {"status": 200}  # finished on the old runtime's target
        before_b = b.total
        keepalive.sendall(build_request("GET", "/one/echo"))
        assert reader.read().status == 200  # same client connection, new config
        assert b.total == before_b + 1
        keepalive.close()
    finally:
        gateway.stop()


def test_an_unchanged_service_keeps_its_breaker_across_a_reload(pair):
    a, b = pair
    a.fail_with = 500
    services = {
        "svc": {
            "targets": [a.url],
            "retry": {"attempts": 1},
            "passive_ejection": None,
            "circuit_breaker": {"open_for": "60s"},
        }
    }
    gateway = GatewayProcess(config({"one": "svc"}, services))
    try:
        for _ in range(5):
            assert request(gateway.port, "GET", "/one/x").status == 500
        assert request(gateway.port, "GET", "/one/x").status == 503  # open
        gateway.write_config(
            config({"one": "svc", "two": "other"}, {**services, "other": {"targets": [b.url]}})
        )
        sighup_and_wait(gateway)
        assert request(gateway.port, "GET", "/two/echo").status == 200
        hits = a.total
        assert request(gateway.port, "GET", "/one/x").status == 503  # still open: carried over
        assert a.total == hits
        assert health(gateway)["services"]["svc"]["breaker"] == "open"
    finally:
        gateway.stop()


def test_a_watched_file_reloads_without_a_signal(pair):
    a, _ = pair
    base = config(
        {"one": "svc"}, {"svc": {"targets": [a.url]}}, reload={"watch": True, "interval": "100ms"}
    )
    gateway = GatewayProcess(base)
    try:
        gateway.write_config({**base, "routes": [*base["routes"], _route("two", "svc")]})
        gateway.wait_for(
            lambda: request(gateway.port, "GET", "/two/echo").status == 200, timeout=10
        )
        assert reloads(gateway, "applied") == 1
        # Nothing else changes: no further reloads.
        time.sleep(0.5)
        assert reloads(gateway, "applied") == 1
    finally:
        gateway.stop()


def test_reload_with_two_workers_reaches_both(pair):
    a, _ = pair
    base = config({"one": "svc"}, {"svc": {"targets": [a.url]}})
    gateway = GatewayProcess(base, workers=2)
    try:
        gateway.write_config({**base, "routes": [*base["routes"], _route("two", "svc")]})
        gateway.signal(signal.SIGHUP)
        # Each request is a new connection, spread over both workers by SO_REUSEPORT.
        gateway.wait_for(lambda: reloads(gateway, "applied") >= 2, timeout=10)
        assert all(request(gateway.port, "GET", "/two/echo").status == 200 for _ in range(40))
        digests = {health(gateway)["config"]["digest"] for _ in range(20)}
        assert len(digests) == 1
        assert gateway.process.poll() is None
    finally:
        gateway.stop()


def test_sighups_while_workers_start_neither_kill_nor_get_lost(pair):
    """A reload sent while a worker is still importing waits for its handler (SIGHUP
    blocked until then) instead of killing it with SIGHUP's default action."""
    a, _ = pair
    base = config({"one": "svc"}, {"svc": {"targets": [a.url]}})
    gateway = GatewayProcess(base, workers=2, wait=False)
    try:
        gateway.wait_for(lambda: gateway.handles(signal.SIGHUP), timeout=20)
        gateway.write_config({**base, "routes": [*base["routes"], _route("two", "svc")]})
        # The supervisor now spawns its workers; it passes a SIGHUP on every 0.2 s.
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            gateway.signal(signal.SIGHUP)
            time.sleep(0.05)
        gateway.wait_until_listening()
        gateway.wait_for(lambda: reloads(gateway, "applied") >= 2, timeout=10)
        logs = gateway.stderr() + gateway.stdout_path.read_text(errors="replace")
        assert "worker died" not in logs
        assert all(request(gateway.port, "GET", "/two/echo").status == 200 for _ in range(20))
    finally:
        gateway.stop()
