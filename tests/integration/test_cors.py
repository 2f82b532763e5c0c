"""CORS over real sockets: preflights answered at the edge, credentials, Vary, the own API."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.support.net import request

FRONT = "http://localhost:5173"


@pytest.fixture(scope="module")
def gateway(upstream):
    from tests.support.gateway import GatewayProcess

    cors = {"allow_origins": [FRONT, "https://*.example.com"], "allow_credentials": True}
    config = {
        "services": {"up": {"targets": [upstream.url]}},
        "routes": [
            {"name": "login", "match": {"path": "/auth/login", "methods": ["POST", "OPTIONS"]},
             "service": "up", "policies": {"rate_limit": {"limit": 1, "window": "60s"}}},
            {"name": "open", "match": {"prefix": "/public"}, "service": "up",
             "policies": {"cors": {"allow_origins": ["*"], "allow_headers": ["*"]}}},
            {"name": "all", "match": {"prefix": "/"}, "service": "up"},
        ],
        "policies": {"cors": cors},
        "api": {"policies": {"cors": cors}},  # the global block never reaches the own API
    }  # fmt: skip
    process = GatewayProcess(config)
    yield process
    process.stop()


def preflight(port: int, path: str, origin: str, method: str = "POST", headers: str = ""):
    extra = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        extra["Access-Control-Request-Headers"] = headers
    return request(port, "OPTIONS", path, headers=extra)


def test_preflight_allowed_is_answered_at_the_edge(gateway, upstream):
    before = sum(upstream.hits.values())
    response = preflight(gateway.port, "/auth/login", FRONT, headers="content-type, authorization")
    assert response.status == 204
    assert response.header("Access-Control-Allow-Origin") == FRONT
    assert response.header("Access-Control-Allow-Credentials") == "true"
    assert "POST" in response.header("Access-Control-Allow-Methods")
    assert "Authorization" in response.header("Access-Control-Allow-Headers")
    assert response.header("Access-Control-Max-Age") == "600"
    assert "Origin" in response.header("Vary")
    assert response.header("Content-Length") is None
    assert sum(upstream.hits.values()) == before  # never proxied


@pytest.mark.parametrize(
    ("origin", "method", "headers"),
    [
        ("https://evil.test", "POST", ""),
        ("https://example.com", "POST", ""),  # the pattern covers subdomains only
        (FRONT, "PROPFIND", ""),
        (FRONT, "POST", "x-secret"),
    ],
)
def test_preflight_refused(gateway, upstream, origin, method, headers):
    before = sum(upstream.hits.values())
    response = preflight(gateway.port, "/auth/login", origin, method, headers)
    assert response.status == 403
    assert response.header("Content-Type") == "application/problem+json"
    assert response.header("Access-Control-Allow-Origin") is None
    assert "Origin" in response.header("Vary")
    assert sum(upstream.hits.values()) == before


def test_credentialed_request_gets_its_origin_back(gateway):
    response = request(
        gateway.port, "POST", "/auth/login", headers={"Origin": "https://app.example.com"},
        body=b"{}",
    )  # fmt: skip
    assert response.status == 200
    assert response.header("Access-Control-Allow-Origin") == "https://app.example.com"
    assert response.header("Access-Control-Allow-Credentials") == "true"
    assert "X-Request-ID" in response.header("Access-Control-Expose-Headers")
    assert response.header_all("Vary")[-1] == "Origin"
    # A refusal from the gateway (429 here) carries the same headers, so the script can read it.
    refused = request(
        gateway.port, "POST", "/auth/login", headers={"Origin": "https://app.example.com"},
        body=b"{}",
    )  # fmt: skip
    assert refused.status == 429
    assert refused.header("Access-Control-Allow-Origin") == "https://app.example.com"
    assert refused.header("Access-Control-Allow-Credentials") == "true"


def test_other_origin_gets_no_permission(gateway):
    response = request(gateway.port, "GET", "/x", headers={"Origin": "https://evil.test"})
    assert response.status == 200  # proxied: the browser enforces CORS, not the server
    assert response.header("Access-Control-Allow-Origin") is None
    assert "Origin" in response.header_all("Vary")


def test_upstream_cors_headers_are_replaced(gateway):
    response = request(
        gateway.port, "GET", "/headers?Access-Control-Allow-Origin=*", headers={"Origin": FRONT}
    )
    assert response.header_all("Access-Control-Allow-Origin") == [FRONT]


def test_wildcard_without_credentials(gateway):
    response = preflight(gateway.port, "/public/x", "https://anyone.test", "PUT", "x-anything")
    assert response.status == 204
    assert response.header("Access-Control-Allow-Origin") == "*"
    assert response.header("Access-Control-Allow-Headers") == "x-anything"
    assert response.header("Access-Control-Allow-Credentials") is None


def test_own_api_preflight_is_answered(gateway):
    response = preflight(gateway.port, "/api/v1/health", FRONT, "GET")
    assert response.status == 204
    assert response.header("Access-Control-Allow-Origin") == FRONT


def test_star_with_credentials_is_refused_by_check(tmp_path):
    config = {
        "services": {"up": {"targets": ["http://127.0.0.1:9"]}},
        "routes": [{"match": {"prefix": "/"}, "service": "up"}],
        "policies": {"cors": {"allow_origins": ["*"], "allow_credentials": True}},
    }
    path = tmp_path / "potok.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "potok", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "policies.cors.allow_origins: '*' cannot be combined with allow_credentials" in (
        result.stderr
    )


@pytest.mark.parametrize("spell", [str.lower, str.upper])
def test_header_names_in_any_case(gateway, spell):
    """Names are matched case-insensitively (a proxy in front may lower-case them)."""
    extra = {
        spell("Origin"): FRONT,
        spell("Access-Control-Request-Method"): "POST",
        spell("Access-Control-Request-Headers"): "content-type",
    }
    answered = request(gateway.port, "OPTIONS", "/auth/login", headers=extra)
    assert answered.status == 204
    assert answered.header("Access-Control-Allow-Origin") == FRONT
    simple = request(gateway.port, "GET", "/x", headers={spell("Origin"): FRONT})
    assert simple.header("Access-Control-Allow-Origin") == FRONT
