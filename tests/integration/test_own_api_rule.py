"""One rule: the global `policies:` block never applies to the gateway's own API; the own
API has its own block (`api.policies`), and probes and metrics are never refused."""

from __future__ import annotations

import subprocess
import sys

import yaml

from tests.support.gateway import GatewayProcess, simple_config
from tests.support.identity_gateway import add_user, auth_config, call, public_pem, rsa_private
from tests.support.net import request


def test_a_global_rate_limit_leaves_the_own_api_alone(upstream, tmp_path):
    """A global 5/min limit used to share one bucket with /api/v1/metrics: after five
    scrapes, metrics, login and /api/docs all got 429."""
    database = f"sqlite:///{tmp_path}/identity.db"
    add_user(database, "alice", "correct horse battery")
    config = auth_config(upstream.url, database, public_pem(rsa_private()))
    config["policies"] = {"rate_limit": {"limit": 5, "window": "60s"}}
    gateway = GatewayProcess(config)
    try:
        scrapes = [request(gateway.port, "GET", "/api/v1/metrics").status for _ in range(8)]
        assert scrapes == [200] * 8
        body = {"username": "alice", "password": "correct horse battery"}
        assert call(gateway.port, "POST", "/api/v1/auth/login", body).status == 200
        assert request(gateway.port, "GET", "/api/docs").status == 200
        assert request(gateway.port, "GET", "/api/v1/health/liveness").status == 200
        # The proxied route does get the global limit.
        proxied = [request(gateway.port, "GET", "/open/x").status for _ in range(7)]
        assert proxied[:5] == [200] * 5 and proxied[5:] == [429, 429]
    finally:
        gateway.stop()


def test_the_own_api_block_limits_login_but_not_probes_or_metrics(upstream, tmp_path):
    database = f"sqlite:///{tmp_path}/identity.db"
    add_user(database, "alice", "correct horse battery")
    config = auth_config(upstream.url, database, public_pem(rsa_private()))
    config["api"] = {"policies": {"rate_limit": {"limit": 2, "window": "60s", "key": "ip"}}}
    gateway = GatewayProcess(config)
    try:
        body = {"username": "alice", "password": "correct horse battery"}
        logins = [call(gateway.port, "POST", "/api/v1/auth/login", body) for _ in range(3)]
        assert [r.status for r in logins] == [200, 200, 429]
        assert logins[2].header("content-type") == "application/problem+json"
        assert logins[2].header("retry-after") is not None
        for path in ("/api/v1/health", "/api/v1/health/readiness", "/api/v1/metrics"):
            assert [request(gateway.port, "GET", path).status for _ in range(4)] == [200] * 4
        # Proxied routes do not count against the own API's limit, nor it against them.
        assert [request(gateway.port, "GET", "/open/x").status for _ in range(4)] == [200] * 4
    finally:
        gateway.stop()


def test_the_own_api_block_takes_only_policies_that_apply_there(tmp_path, upstream):
    config = simple_config(upstream.url)
    config["api"] = {"policies": {"auth_jwt": {"issuers": []}, "headers": {}}}
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
    assert "api.policies.auth_jwt: unknown field" in result.stderr
    assert "api.policies.headers: unknown field" in result.stderr


def test_gateway_scoped_limits_of_the_two_blocks_are_separate_budgets(upstream):
    config = simple_config(upstream.url)
    limit = {"limit": 3, "window": "60s", "scope": "gateway"}
    config["policies"] = {"rate_limit": limit}
    config["api"] = {"policies": {"rate_limit": limit}}
    gateway = GatewayProcess(config)
    try:
        assert [request(gateway.port, "GET", "/x").status for _ in range(4)] == [200] * 3 + [429]
        own = [request(gateway.port, "GET", "/api/openapi.json").status for _ in range(4)]
        assert own == [200] * 3 + [429]
    finally:
        gateway.stop()
