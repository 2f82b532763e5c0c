"""The gateway's own API answers carry the global response policies (CORS, security headers)."""

from __future__ import annotations

from tests.support.gateway import GatewayProcess, simple_config
from tests.support.net import request


def test_own_api_answers_carry_cors_and_security_headers(upstream):
    config = simple_config(upstream.url)
    config["policies"] = {
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
    finally:
        gateway.stop()
