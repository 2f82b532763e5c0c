"""The own API's OpenAPI document is complete: schemathesis (all checks) against a running
gateway with the token service, realtime events and the admin API finds nothing."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.identity_gateway import add_user, auth_config, call, public_pem, rsa_private
from tests.support.net import request
from tests.support.realtime import EVENTS_KEY, realtime_config

PASSWORD = "openapi conformance password"
SCHEMATHESIS = Path(sys.executable).parent / "st"


@pytest.fixture(scope="module")
def gateway(upstream) -> Iterator[GatewayProcess]:
    database_url = f"sqlite:///{tempfile.mkdtemp(prefix='potok-openapi-')}/identity.db"
    add_user(database_url, "alice", PASSWORD, roles=("admin",))
    config = auth_config(upstream.url, database_url, public_pem(rsa_private()))
    config.update(realtime_config())
    config["admin"] = {"public": True}  # behind the admin role on the public port
    process = GatewayProcess(config)
    yield process
    process.stop()


def document(gateway: GatewayProcess) -> dict:
    response = request(gateway.port, "GET", "/api/openapi.json")
    assert response.status == 200
    return response.json()


def test_the_document_is_also_at_the_versioned_path(gateway):
    versioned = request(gateway.port, "GET", "/api/v1/openapi.json")
    assert versioned.status == 200
    assert versioned.header("content-type") == "application/json"
    assert versioned.json() == document(gateway)


def test_every_answer_of_the_own_api_is_declared(gateway):
    paths = document(gateway)["paths"]
    answers = {
        ("post", "/api/v1/auth/login"): {"200", "400", "401", "413", "422", "429"},
        ("post", "/api/v1/auth/refresh"): {"200", "400", "401", "413", "422", "429"},
        ("post", "/api/v1/auth/logout"): {"204", "400", "401", "413", "422", "429"},
        ("get", "/api/v1/auth/profile"): {"200", "401", "429"},
        ("post", "/api/v1/events"): {"202", "400", "401", "413", "422", "429", "503"},
    }
    for (method, path), statuses in answers.items():
        operation = paths[path][method]
        assert statuses <= set(operation["responses"]), (method, path)
        for status in statuses - {"200", "202", "204"}:
            content = operation["responses"][status]["content"]
            assert list(content) == ["application/problem+json"], (path, status)
    metrics = paths["/api/v1/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    events_body = paths["/api/v1/events"]["post"]["requestBody"]
    assert events_body["required"] and "application/json" in events_body["content"]


def test_the_override_actions_document_how_far_they_reach(gateway):
    paths = document(gateway)["paths"]
    for path in (
        "/api/v1/admin/services/{service}/breaker",
        "/api/v1/admin/services/{service}/targets/{target}/drain",
        "/api/v1/admin/services/{service}/targets/{target}/enable",
    ):
        operation = paths[path]["post"]
        params = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
        assert params["scope"]["schema"]["enum"] == ["instance", "cluster"], path
        assert params["scope"]["schema"]["default"] == "instance"
        assert params["ack_wait"]["schema"]["maximum"] == 5
        assert "503" in operation["responses"]  # applied here, the bus refused it


def test_schemathesis_finds_nothing(gateway):
    login = call(
        gateway.port, "POST", "/api/v1/auth/login", {"username": "alice", "password": PASSWORD}
    )
    access = login.json()["access_token"]
    started = time.monotonic()
    result = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{gateway.url}/api/v1/openapi.json",
            "--checks", "all",
            "--max-examples", "30",
            "--seed", "1",
            "--generation-database", "none",
            "--request-timeout", "10",
            "--workers", "1",
            "--no-color",
            "--exclude-path-regex", "^/api/v1/admin",  # test_schemathesis_finds_nothing_in_admin
            "-H", f"Authorization: Bearer {access}",
            "-H", f"X-API-Key: {EVENTS_KEY}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tempfile.mkdtemp(prefix="potok-schemathesis-"),  # its cache stays out of the tree
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    # Every operation of the own API outside /api/v1/admin was exercised.
    assert "Tested: 9" in result.stdout
    assert elapsed < 60, f"schemathesis took {elapsed:.0f} s"


# The admin API refuses a config document that does not validate with 422 naming the
# fields, though any text fits its schema (a string): for that operation 422 is an
# answer to positive data too. If-Match mismatch (412) likewise.
ADMIN_CHECKS = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "412", "422", "429"]
"""


def test_schemathesis_finds_nothing_in_admin(gateway):
    login = call(
        gateway.port, "POST", "/api/v1/auth/login", {"username": "alice", "password": PASSWORD}
    )
    access = login.json()["access_token"]
    workdir = Path(tempfile.mkdtemp(prefix="potok-schemathesis-"))
    (workdir / "schemathesis.toml").write_text(ADMIN_CHECKS)
    started = time.monotonic()
    result = subprocess.run(
        [
            str(SCHEMATHESIS),
            "--config-file", str(workdir / "schemathesis.toml"),
            "run",
            f"{gateway.url}/api/v1/openapi.json",
            "--checks", "all",
            "--max-examples", "15",
            "--seed", "1",
            "--generation-database", "none",
            "--request-timeout", "10",
            "--workers", "1",
            "--no-color",
            "--include-path-regex", "^/api/v1/admin",
            "-H", f"Authorization: Bearer {access}",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=workdir,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    # Every admin operation was exercised: the admin API's 24, the cache's 2 and the
    # webhooks' 5.
    assert "Tested: 31" in result.stdout
    assert elapsed < 180, f"schemathesis took {elapsed:.0f} s"
