"""Revocation backend 'redis' on the gateway's shared `redis:` section, across two gateways.

Two gateway processes share one database and one Redis (127.0.0.1:6379); their
database poll is an hour apart, so only Redis can carry a logout from one to
the other within the test.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.support.gateway import GatewayProcess
from tests.support.identity_gateway import (
    add_user,
    auth_config,
    bearer,
    call,
    public_pem,
    rsa_private,
)
from tests.support.net import request

PASSWORD = "revocation tests password"
PREFIX = f"potok-test-{secrets.token_hex(4)}:"


def shared_redis_config(upstream_url: str, database_url: str) -> dict[str, Any]:
    config = auth_config(upstream_url, database_url, public_pem(rsa_private()))
    config["redis"] = {"url": "redis://127.0.0.1:6379/0", "key_prefix": PREFIX}
    config["auth"]["revocation"] = {"backend": "redis", "poll_interval": "1h"}
    return config


@pytest.fixture(scope="module")
def gateways(upstream) -> Iterator[list[GatewayProcess]]:
    database_url = f"sqlite:///{tempfile.mkdtemp(prefix='potok-revocation-')}/identity.db"
    add_user(database_url, "alice", PASSWORD)
    config = shared_redis_config(upstream.url, database_url)
    started = [GatewayProcess(config), GatewayProcess(config)]
    yield started
    for gateway in started:
        gateway.stop()


def test_a_logout_on_one_gateway_is_refused_by_the_other_at_once(gateways, upstream):
    first, second = gateways
    subscriber = redis.Redis(host="127.0.0.1", port=6379).pubsub()
    subscriber.subscribe(PREFIX + "revoked:events")  # the shared section's key_prefix
    try:
        tokens = call(
            first.port, "POST", "/api/v1/auth/login", {"username": "alice", "password": PASSWORD}
        ).json()
        access = tokens["access_token"]
        assert request(second.port, "GET", "/api/before", bearer(access)).status == 200
        logout = call(first.port, "POST", "/api/v1/auth/logout", **bearer(access))
        assert logout.status == 204
        assert request(first.port, "GET", "/api/after-1", bearer(access)).status == 401

        deadline = time.monotonic() + 2.0  # far less than the hour between database polls
        while request(second.port, "GET", "/api/after-2", bearer(access)).status != 401:
            assert time.monotonic() < deadline, "the other gateway never learned of the logout"
            time.sleep(0.05)
        assert upstream.hits["/api/after-1"] == 0

        published = []
        for _ in range(20):
            message = subscriber.get_message(timeout=0.1)
            if message is not None and message["type"] == "message":
                published.append(message["data"])
        assert any(data.startswith(b"jti\t") for data in published)
    finally:
        subscriber.close()
