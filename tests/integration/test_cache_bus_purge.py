"""Purges over the realtime event bus, through real gateways and the real buses (Redis on
6379 and NATS on 4222, unique subjects per test): an event the `cache.invalidate` rules
map to a tag purges it on a second instance, and an admin purge taken by one instance
empties another instance's memory store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cache_stale import Origin
from tests.support.gateway import GatewayProcess
from tests.support.identity_gateway import CHEAP_ARGON2, HS_SECRET, add_user, call
from tests.support.net import Response, request
from tests.support.realtime import publish, realtime_config

PASSWORD = "correct horse battery"
RULES = [
    {"channel": "org:{org}:tasks", "events": ["task:updated"], "tags": ["tasks:{org}"]},
    {"channel": "org:{org}:tasks", "events": ["task:deleted"], "tags": ["task:{data.id}"]},
]


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.raw.stop()


def bus(kind: str) -> dict[str, Any]:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    if kind == "redis":
        return {"backend": "redis", "subject_prefix": prefix,
                "redis": {"url": "redis://127.0.0.1:6379/0"}}  # fmt: skip
    if kind == "nats":
        stream = f"T{uuid.uuid4().hex[:12]}"
        return {"backend": "nats", "subject_prefix": prefix,
                "nats": {"stream": stream, "storage": "memory"}}  # fmt: skip
    return {"backend": "memory"}


def gateway_config(origin: Origin, bus_config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    config = realtime_config(bus=bus_config)
    config.update(
        {
            "services": {"up": {"targets": [origin.raw.url]}},
            "routes": [
                {
                    "name": "tasks",
                    "match": {"path": "/orgs/{org}/tasks"},
                    "service": "up",
                    "policies": {"cache": {"tags": ["tasks:{org}"], "x_cache": True}},
                }
            ],
            "cache": {"invalidate": RULES},
            **extra,
        }
    )
    return config


def tasks_path(origin: Origin, tags: str = "") -> tuple[str, str]:
    org = f"o{uuid.uuid4().hex[:10]}"
    path = f"/orgs/{org}/tasks"
    origin.headers[path] = "Cache-Control: max-age=300" + (f"\r\nCache-Tag: {tags}" if tags else "")
    return org, path


def cached_on(gateway: GatewayProcess, path: str) -> Response:
    """GET until the answer is a hit (the entry is stored)."""
    deadline = time.monotonic() + 5
    while True:
        answer = request(gateway.port, "GET", path)
        if answer.header("X-Cache") == "HIT" or time.monotonic() > deadline:
            assert answer.header("X-Cache") == "HIT", answer
            return answer
        time.sleep(0.02)


def purged_on(gateway: GatewayProcess, path: str, timeout: float = 5.0) -> bool:
    """Whether a GET misses within `timeout` (a miss stores again: then it hits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if request(gateway.port, "GET", path).header("X-Cache") == "MISS":
            return True
        time.sleep(0.05)
    return False


def event(org: str, kind: str, **data: Any) -> dict[str, Any]:
    return {"channel": f"org:{org}:tasks", "type": kind, "data": data}


@pytest.mark.parametrize("kind", ["redis", "nats"])
def test_an_event_on_the_bus_purges_a_tag_on_another_instance(origin: Origin, kind: str) -> None:
    bus_config = bus(kind)
    first = GatewayProcess(gateway_config(origin, bus_config))
    second = GatewayProcess(gateway_config(origin, bus_config))
    try:
        org, path = tasks_path(origin, tags="task:7")
        _other_org, other_path = tasks_path(origin)
        for target in (path, other_path):
            request(second.port, "GET", target)
            cached_on(second, target)
        # An event type no rule names purges nothing.
        assert publish(first.port, event(org, "task:viewed")).status == 202
        time.sleep(0.5)
        assert request(second.port, "GET", path).header("X-Cache") == "HIT"
        # task:updated for org X -> tag tasks:X, on the other instance, for org X only.
        assert publish(first.port, event(org, "task:updated")).status == 202
        assert purged_on(second, path)
        assert request(second.port, "GET", other_path).header("X-Cache") == "HIT"
        # A tag filled from the event's data (the upstream's Cache-Tag: task:7).
        cached_on(second, path)
        assert publish(first.port, event(org, "task:deleted", id=8)).status == 202
        time.sleep(0.5)
        assert request(second.port, "GET", path).header("X-Cache") == "HIT"
        assert publish(first.port, event(org, "task:deleted", id=7)).status == 202
        assert purged_on(second, path)
        metrics = request(second.port, "GET", "/api/v1/metrics").body.decode()
        assert 'cache_bus_purges_total{source="event"} 3' in metrics
    finally:
        first.stop()
        second.stop()


def test_the_memory_bus_purges_in_its_own_process(origin: Origin) -> None:
    gateway = GatewayProcess(gateway_config(origin, bus("memory")))
    try:
        org, path = tasks_path(origin)
        request(gateway.port, "GET", path)
        cached_on(gateway, path)
        assert publish(gateway.port, event(org, "task:updated")).status == 202
        assert purged_on(gateway, path)
    finally:
        gateway.stop()


def test_nobody_publishes_on_the_gateways_own_purge_channel(origin: Origin) -> None:
    gateway = GatewayProcess(gateway_config(origin, bus("memory")))
    try:
        _org, path = tasks_path(origin)
        request(gateway.port, "GET", path)
        cached_on(gateway, path)
        forged = {"channel": "_potok.cache.purge", "type": "cache.purge", "data": {}}
        assert publish(gateway.port, forged).status == 422
        assert request(gateway.port, "GET", path).header("X-Cache") == "HIT"
    finally:
        gateway.stop()


def fetched_by_every_worker(
    gateway: GatewayProcess, origin: Origin, path: str, count: int, tries: int = 100
) -> bool:
    """GET `path` until the origin has answered it `count` times (each worker whose store
    lacks it goes upstream once, then hits); False if it never gets there."""
    for _ in range(tries):
        if origin.counts.get(path, 0) >= count:
            break
        request(gateway.port, "GET", path)
        time.sleep(0.01)
    time.sleep(0.2)
    for _ in range(10):  # and no more than that: every worker now holds it
        request(gateway.port, "GET", path)
    return origin.counts.get(path, 0) == count


def bearer(gateway: GatewayProcess) -> dict[str, str]:
    response = call(
        gateway.port, "POST", "/api/v1/auth/login", {"username": "root", "password": PASSWORD}
    )
    assert response.status == 200, response
    return {"Authorization": f"Bearer {response.json()['access_token']}"}  # type: ignore[index]


def admin_purge(gateway: GatewayProcess, headers: dict[str, str], **what: Any) -> Any:
    return request(
        gateway.port,
        "POST",
        "/api/v1/admin/cache/purge",
        {**headers, "Content-Type": "application/json"},
        json.dumps(what).encode(),
    )


def test_an_admin_purge_on_one_instance_empties_another_instances_memory_store(
    origin: Origin,
) -> None:
    db_url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='potok-cache-'))}/identity.db"
    add_user(db_url, "root", PASSWORD, ("admin",))
    identity = {
        "database": {"url": db_url},
        "auth": {
            "token_service": {
                "enabled": True,
                "signing": {"algorithm": "HS256", "secret": HS_SECRET},
            },
            "passwords": CHEAP_ARGON2,
        },
    }
    bus_config = bus("redis")
    first = GatewayProcess(gateway_config(origin, bus_config, **identity))
    second = GatewayProcess(gateway_config(origin, bus_config), workers=2)
    try:
        org, path = tasks_path(origin)
        _other_org, other_path = tasks_path(origin)
        # Each of the second instance's two workers has its own memory store: ask until
        # both have gone upstream once (then both hold the entry).
        for target in (path, other_path):
            assert fetched_by_every_worker(second, origin, target, 2)
        answer = admin_purge(first, bearer(first), tag=f"tasks:{org}")
        assert answer.status == 200, answer
        assert answer.json()["scope"] == "all"  # type: ignore[index]
        # Both workers forgot the tagged entry (each goes upstream again), and only it.
        assert fetched_by_every_worker(second, origin, path, 4)
        assert origin.counts[other_path] == 2
        # Everything, with `potok cache purge`: every worker of the other instance forgets.
        token = bearer(first)["Authorization"].removeprefix("Bearer ")
        result = subprocess.run(
            [sys.executable, "-m", "potok", "cache", "purge", "--url", first.url],
            capture_output=True,
            text=True,
            env={**os.environ, "POTOK_ADMIN_TOKEN": token},
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "every other worker and instance" in result.stdout
        assert fetched_by_every_worker(second, origin, other_path, 4)
        stats = request(first.port, "GET", "/api/v1/admin/cache/stats", bearer(first)).json()
        assert stats["scope"] == "worker"  # type: ignore[index]
    finally:
        first.stop()
        second.stop()


def test_an_event_purges_the_redis_store_once_for_every_instance(origin: Origin) -> None:
    import redis

    prefix = f"test:{uuid.uuid4().hex}:"
    bus_config = bus("redis")
    configs = []
    for _ in range(2):
        config = gateway_config(origin, bus_config, redis={"url": "redis://127.0.0.1:6379/0"})
        config["routes"][0]["policies"]["cache"].update({"store": "redis", "redis_prefix": prefix})
        configs.append(config)
    first = GatewayProcess(configs[0])
    second = GatewayProcess(configs[1], workers=2)
    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        org, path = tasks_path(origin)
        request(first.port, "GET", path)
        cached_on(second, path)
        answer = publish(first.port, event(org, "task:updated"))
        assert answer.status == 202
        assert purged_on(second, path)
        time.sleep(0.5)
        # Three workers saw the event; one claimed it and purged Redis.
        claims = list(client.scan_iter(match=f"{prefix}b:*"))
        assert len(claims) == 1, claims
    finally:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()
        first.stop()
        second.stop()
