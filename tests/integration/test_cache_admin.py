"""The cache's admin endpoints (stats, purge) and metrics, through the real gateway."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cache_stale import Origin
from tests.support.gateway import GatewayProcess
from tests.support.identity_gateway import CHEAP_ARGON2, HS_SECRET, add_user, call
from tests.support.net import request

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.raw.stop()


@pytest.fixture(scope="module")
def gateway(origin: Origin) -> Iterator[GatewayProcess]:
    db_url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='potok-cache-'))}/identity.db"
    add_user(db_url, "root", PASSWORD, ("admin",))
    add_user(db_url, "alice", PASSWORD, ("reader",))
    cached = {"tags": ["item:{id}"]}
    process = GatewayProcess(
        {
            "services": {"up": {"targets": [origin.raw.url]}},
            "routes": [
                {
                    "name": "items",
                    "match": {"path": "/items/{id}"},
                    "service": "up",
                    "policies": {"cache": cached},
                },
                {
                    "name": "other",
                    "match": {"prefix": "/other/"},
                    "service": "up",
                    "policies": {"cache": {}},
                },
            ],
            "database": {"url": db_url},
            "auth": {
                "token_service": {
                    "enabled": True,
                    "signing": {"algorithm": "HS256", "secret": HS_SECRET},
                },
                "passwords": CHEAP_ARGON2,
            },
        }
    )
    yield process
    process.stop()


def bearer(gateway: GatewayProcess, user: str) -> dict[str, str]:
    response = call(
        gateway.port, "POST", "/api/v1/auth/login", {"username": user, "password": PASSWORD}
    )
    assert response.status == 200, response
    return {"Authorization": f"Bearer {response.json()['access_token']}"}  # type: ignore[index]


def cached_path(origin: Origin, prefix: str = "/items/") -> str:
    path = prefix + uuid.uuid4().hex[:8]
    origin.headers[path] = "Cache-Control: max-age=300\r\nCache-Tag: group-a, shared"
    return path


def body(gateway: GatewayProcess, path: str) -> bytes:
    return request(gateway.port, "GET", path).body


def purge(gateway: GatewayProcess, headers: dict[str, str], **what: Any) -> Any:
    import json

    return request(
        gateway.port,
        "POST",
        "/api/v1/admin/cache/purge",
        {**headers, "Content-Type": "application/json"},
        json.dumps(what).encode(),
    )


def test_admin_role_required(gateway: GatewayProcess) -> None:
    assert request(gateway.port, "GET", "/api/v1/admin/cache/stats").status == 401
    reader = bearer(gateway, "alice")
    assert request(gateway.port, "GET", "/api/v1/admin/cache/stats", reader).status == 403
    assert purge(gateway, reader).status == 403


def test_stats_hit_rate_and_metrics(gateway: GatewayProcess, origin: Origin) -> None:
    path = cached_path(origin)
    for _ in range(4):
        body(gateway, path)
    stats = request(gateway.port, "GET", "/api/v1/admin/cache/stats", bearer(gateway, "root"))
    assert stats.status == 200
    items = stats.json()["routes"]["items"]  # type: ignore[index]
    assert items["requests"]["hit"] >= 3 and items["entries"] >= 1 and items["bytes"] > 0
    assert 0 < items["hit_rate"] <= 1
    text = request(gateway.port, "GET", "/api/v1/metrics").body.decode()
    assert 'cache_requests_total{result="hit",route="items"}' in text or (
        'cache_requests_total{route="items",result="hit"}' in text
    )
    assert "cache_bytes{" in text and "cache_entries{" in text


@pytest.mark.parametrize(
    "what",
    [
        lambda path: {"key": f"gateway.test {path}"},
        lambda path: {"prefix": "gateway.test /items/"},
        lambda path: {"route": "items"},
        lambda path: {"route": "items", "prefix": "gateway.test /items/"},
        lambda path: {"tag": "shared"},
        lambda path: {"tag": f"item:{path.rsplit('/', 1)[1]}"},
        lambda path: {},
    ],
    ids=["key", "prefix", "route", "route-prefix", "upstream-tag", "route-tag", "everything"],
)
def test_purge(gateway: GatewayProcess, origin: Origin, what: Any) -> None:
    path = cached_path(origin)
    first = body(gateway, path)
    assert body(gateway, path) == first
    answer = purge(gateway, bearer(gateway, "root"), **what(path))
    assert answer.status == 200 and answer.json()["purged"] >= 1, answer  # type: ignore[index]
    assert body(gateway, path) != first


def test_purge_leaves_other_entries(gateway: GatewayProcess, origin: Origin) -> None:
    kept = cached_path(origin, "/other/")
    first = body(gateway, kept)
    purge(gateway, bearer(gateway, "root"), route="items")
    assert body(gateway, kept) == first


def test_cli_purge_by_tag(gateway: GatewayProcess, origin: Origin) -> None:
    import os
    import subprocess
    import sys

    path = cached_path(origin)
    first = body(gateway, path)
    token = bearer(gateway, "root")["Authorization"].removeprefix("Bearer ")
    env = {**os.environ, "POTOK_ADMIN_TOKEN": token}
    tag = f"item:{path.rsplit('/', 1)[1]}"
    result = subprocess.run(
        [sys.executable, "-m", "potok", "cache", "purge", "--url", gateway.url, "--tag", tag],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "purged 1"
    assert body(gateway, path) != first
    refused = subprocess.run(
        [sys.executable, "-m", "potok", "cache", "purge", "--url", gateway.url, "--token", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1 and "401" in refused.stderr
