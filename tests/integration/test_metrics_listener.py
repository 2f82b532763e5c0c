"""Metrics and probes on a listener of their own (`metrics.listen`), and HEAD wherever GET
works on the own API."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.support.gateway import GatewayProcess, simple_config
from tests.support.net import free_port, request, wait_for_port

PROBES = ("/api/v1/health", "/api/v1/health/liveness", "/api/v1/health/readiness")


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_only_on_their_listener_probes_on_both(upstream, workers):
    admin = free_port()
    config = simple_config(upstream.url)
    config["metrics"] = {"listen": f"127.0.0.1:{admin}"}
    if workers > 1:
        config["logging"] = {"level": "info"}
    gateway = GatewayProcess(config, workers=workers)
    try:
        wait_for_port(admin, timeout=20)
        assert request(gateway.port, "GET", "/x").status == 200
        public = request(gateway.port, "GET", "/api/v1/metrics")
        # Not on the public port: the catch-all route takes it to the upstream, as any path.
        assert "http_requests_total" not in public.body.decode(errors="replace")
        scrape = request(admin, "GET", "/api/v1/metrics")
        assert scrape.status == 200 and "http_requests_total" in scrape.body.decode()
        for path in PROBES:
            assert request(gateway.port, "GET", path).status == 200, path
            assert request(admin, "GET", path).status == 200, path
            assert request(admin, "HEAD", path).status == 200, path
        assert request(admin, "HEAD", "/api/v1/metrics").status == 200
        # The admin listener serves nothing else: no docs, no auth, no proxied routes.
        for path in ("/api/docs", "/api/openapi.json", "/x", "/api/v1/auth/login"):
            assert request(admin, "GET", path).status == 404, path
    finally:
        gateway.stop()


def test_without_a_route_there_the_public_metrics_path_is_404(upstream):
    admin = free_port()
    config = {
        "services": {"up": {"targets": [upstream.url]}},
        "routes": [{"match": {"prefix": "/app"}, "service": "up"}],
        "metrics": {"listen": f"127.0.0.1:{admin}"},
    }
    gateway = GatewayProcess(config)
    try:
        wait_for_port(admin, timeout=20)
        assert request(gateway.port, "GET", "/api/v1/metrics").status == 404
        assert request(admin, "GET", "/api/v1/metrics").status == 200
    finally:
        gateway.stop()


def test_head_works_wherever_get_does_on_the_own_api(upstream):
    gateway = GatewayProcess(simple_config(upstream.url))
    try:
        for path in (*PROBES, "/api/v1/metrics", "/api/docs", "/api/openapi.json"):
            get = request(gateway.port, "GET", path)
            head = request(gateway.port, "HEAD", path)
            assert (get.status, head.status) == (200, 200), path
            assert head.body == b""
            assert head.header("content-type") == get.header("content-type")
            # The length GET's body has (health and metrics change from call to call).
            if path.endswith(("/liveness", "/openapi.json", "/docs")):
                assert head.header("content-length") == str(len(get.body))
    finally:
        gateway.stop()


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("9100", "give host:port"),
        ("127.0.0.1:0", "the port must be 1-65535"),
        ("::1:9100", "in brackets"),
        ("127.0.0.1:{port}", "needs a port of its own"),
    ],
)
def test_a_bad_metrics_listener_is_refused_by_check(tmp_path, listen, message):
    config = simple_config("http://127.0.0.1:9")
    config["server"] = {"port": 8088}
    config["metrics"] = {"listen": listen.format(port=8088)}
    path = tmp_path / "potok.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "potok", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "metrics.listen" in result.stderr and message in result.stderr
