"""The gateway's own API answers carry its own response policies (`api.policies`: CORS,
security headers); the global block never applies to it."""

from __future__ import annotations

from tests.support.gateway import GatewayProcess, simple_config
from tests.support.identity_gateway import add_user, auth_config, call, public_pem, rsa_private
from tests.support.net import request


def test_own_api_answers_carry_cors_and_security_headers(upstream):
    config = simple_config(upstream.url) | {"api": {}}
    config["api"]["policies"] = {
        "cors": {"allow_origins": ["http://localhost:5173"], "allow_credentials": True},
        "security_headers": {},
    }
    gateway = GatewayProcess(config)
    try:
        response = request(
            gateway.port,
            "GET",
            "/api/v1/health/liveness",
            headers={"Origin": "http://localhost:5173"},
        )
        assert response.status == 200
        assert response.header("access-control-allow-origin") == "http://localhost:5173"
        assert response.header("access-control-allow-credentials") == "true"
        assert response.header("x-content-type-options") == "nosniff"
        # Swagger UI comes from the gateway itself (no CDN); nothing may frame its pages.
        docs = request(gateway.port, "GET", "/api/docs")
        assert docs.status == 200 and b"swagger-ui" in docs.body
        csp = docs.header("content-security-policy")
        assert "frame-ancestors 'none'" in csp and "script-src 'self';" in csp
        assert "cdn.jsdelivr.net" not in csp
        # A proxied answer gets the configured CSP (none here), not the own pages' one.
        assert request(gateway.port, "GET", "/").header("content-security-policy") is None
    finally:
        gateway.stop()


def log_in(gateway: GatewayProcess, password: str, origin: str):
    body = {"username": "alice", "password": password}
    return call(gateway.port, "POST", "/api/v1/auth/login", body, Origin=origin)


def test_login_works_from_a_browser_with_credentials_include(upstream, tmp_path):
    """The bug an earlier gateway shipped: login's preflight passed, its answer had no CORS
    headers, so `fetch(..., {credentials: "include"})` failed in the browser."""
    database = f"sqlite:///{tmp_path}/identity.db"
    add_user(database, "alice", "correct horse battery")
    config = auth_config(upstream.url, database, public_pem(rsa_private())) | {"api": {}}
    config["api"]["policies"] = {
        "cors": {"allow_origins": ["https://app.example.com"], "allow_credentials": True},
        "security_headers": {},
    }
    origin = "https://app.example.com"
    gateway = GatewayProcess(config)
    try:
        preflight = request(
            gateway.port,
            "OPTIONS",
            "/api/v1/auth/login",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert preflight.status == 204
        assert preflight.header("access-control-allow-origin") == origin
        assert preflight.header("access-control-allow-credentials") == "true"
        login = log_in(gateway, "correct horse battery", origin)
        assert login.status == 200 and "access_token" in login.json()
        assert login.header("access-control-allow-origin") == origin
        assert login.header("access-control-allow-credentials") == "true"
        assert "Origin" in (login.header("vary") or "")
        # A refusal carries them too, or the browser hides the 401 behind a CORS error.
        wrong = log_in(gateway, "wrong", origin)
        assert wrong.status == 401
        assert wrong.header("access-control-allow-origin") == origin
        # Another origin gets no permission, on the preflight or the answer.
        other = log_in(gateway, "correct horse battery", "https://evil.example")
        assert other.header("access-control-allow-origin") is None
    finally:
        gateway.stop()
