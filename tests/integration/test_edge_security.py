"""Security headers and IP rules over real sockets."""

from __future__ import annotations

import pytest

from tests.support.net import request


@pytest.fixture(scope="module")
def gateway(upstream):
    from tests.support.gateway import GatewayProcess

    config = {
        "services": {"up": {"targets": [upstream.url]}},
        "routes": [
            {"name": "internal", "match": {"prefix": "/internal"}, "service": "up",
             "policies": {"ip_filter": {"allow": ["10.0.0.0/8", "::1"]}}},
            {"name": "blocked", "match": {"prefix": "/blocked"}, "service": "up",
             "policies": {"ip_filter": {"deny": ["127.0.0.0/8", "2001:db8::/32"]}}},
            {"name": "framed", "match": {"prefix": "/framed"}, "service": "up",
             "policies": {"security_headers": {"frame_options": "SAMEORIGIN", "hsts": None,
                                               "content_security_policy": "default-src 'none'"}}},
            {"name": "all", "match": {"prefix": "/"}, "service": "up"},
        ],
        "policies": {
            "security_headers": {},
            "ip_filter": {"allow": ["127.0.0.0/8"], "deny": ["127.0.0.2"]},
        },
    }  # fmt: skip
    process = GatewayProcess(config)
    yield process
    process.stop()


def test_security_headers_on_proxied_answers(gateway):
    response = request(gateway.port, "GET", "/headers?Server=nginx/1.2.3&X-Powered-By=PHP/5")
    assert response.status == 200
    # Plain http: no HSTS (RFC 6797 7.2); behind a trusted proxy that terminated TLS, yes.
    assert response.header("Strict-Transport-Security") is None
    assert response.header("X-Content-Type-Options") == "nosniff"
    assert response.header("X-Frame-Options") == "DENY"
    assert response.header("Referrer-Policy") == "strict-origin-when-cross-origin"
    # Neither the upstream's software nor the gateway's version leaks.
    assert response.header("X-Powered-By") is None
    for value in response.header_all("Server"):
        assert not any(ch.isdigit() for ch in value)


def test_upstream_value_is_kept_unless_override(gateway):
    response = request(gateway.port, "GET", "/headers?X-Frame-Options=SAMEORIGIN")
    assert response.header_all("X-Frame-Options") == ["SAMEORIGIN"]


def test_route_override(gateway):
    response = request(gateway.port, "GET", "/framed/x")
    assert response.header("X-Frame-Options") == "SAMEORIGIN"
    assert response.header("Strict-Transport-Security") is None
    assert response.header("Content-Security-Policy") == "default-src 'none'"


def test_gateway_refusals_carry_security_headers(gateway):
    response = request(gateway.port, "GET", "/blocked/x")
    assert response.status == 403
    assert response.header("X-Content-Type-Options") == "nosniff"


def test_route_deny_list(gateway, upstream):
    before = upstream.hits["/blocked/x"]
    response = request(gateway.port, "GET", "/blocked/x")
    assert response.status == 403
    assert response.header("Content-Type") == "application/problem+json"
    assert upstream.hits["/blocked/x"] == before


def test_route_allow_list_replaces_the_global_one(gateway):
    assert request(gateway.port, "GET", "/internal/x").status == 403  # 127.0.0.1 not on it


def test_global_list_applies_to_other_routes_and_the_own_api(gateway):
    assert request(gateway.port, "GET", "/x").status == 200
    assert request(gateway.port, "GET", "/api/v1/health/liveness").status == 200


def test_spoofed_forwarded_for_cannot_pass_an_allow_list(gateway):
    response = request(gateway.port, "GET", "/internal/x", headers={"X-Forwarded-For": "10.1.1.1"})
    assert response.status == 403
