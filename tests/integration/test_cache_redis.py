"""The Redis store through two real gateways sharing the test's OWN redis-server (on a
free port, stopped by the test): shared entries, the body limit, and a Redis outage
that only ever means misses."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.integration.test_cache_stale import Origin
from tests.integration.test_rate_limit_outage import RedisServer
from tests.support.gateway import GatewayProcess
from tests.support.net import Response, request


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.raw.stop()


def gateway_config(origin: Origin, redis_port: int, prefix: str) -> dict[str, object]:
    cache = {"store": "redis", "redis_prefix": prefix, "redis_max_body": 100, "x_cache": True}
    return {
        "services": {"up": {"targets": [origin.raw.url]}},
        "routes": [
            {"name": "c", "match": {"prefix": "/"}, "service": "up", "policies": {"cache": cache}}
        ],
        "redis": {"url": f"redis://127.0.0.1:{redis_port}/0"},
    }


@pytest.fixture(scope="module")
def pair(
    origin: Origin, redis_server: RedisServer
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    prefix = f"test:{uuid.uuid4().hex}:"
    first = GatewayProcess(gateway_config(origin, redis_server.port, prefix))
    second = GatewayProcess(gateway_config(origin, redis_server.port, prefix))
    yield first, second
    first.stop()
    second.stop()


def get(gateway: GatewayProcess, path: str) -> Response:
    return request(gateway.port, "GET", path)


def path_with(origin: Origin, headers: str) -> str:
    path = "/" + uuid.uuid4().hex
    origin.headers[path] = headers
    return path


def eventually_hit(gateway: GatewayProcess, path: str) -> Response:
    deadline = time.monotonic() + 5
    while True:
        answer = get(gateway, path)
        if answer.header("X-Cache") == "HIT" or time.monotonic() > deadline:
            return answer
        time.sleep(0.05)


def test_an_entry_stored_by_one_instance_is_served_by_the_other(
    pair: tuple[GatewayProcess, GatewayProcess], origin: Origin
) -> None:
    first, second = pair
    path = path_with(origin, "Cache-Control: max-age=60")
    assert get(first, path).body == b"body 1"
    answer = eventually_hit(second, path)
    assert answer.header("X-Cache") == "HIT" and answer.body == b"body 1"
    assert (answer.header("Cache-Status") or "").startswith("potok; hit; ttl=")
    assert origin.counts[path] == 1


def test_bodies_over_the_limit_are_not_stored(
    pair: tuple[GatewayProcess, GatewayProcess], origin: Origin
) -> None:
    first, second = pair
    small = path_with(origin, "Cache-Control: max-age=60")
    origin.padding[small] = 90  # 96 bytes: under the route's 100
    big = path_with(origin, "Cache-Control: max-age=60")
    origin.padding[big] = 95  # 101 bytes
    for path in (small, big):
        assert get(first, path).status == 200
    assert eventually_hit(second, small).header("X-Cache") == "HIT"
    time.sleep(0.3)
    assert get(second, big).body.startswith(b"body 2")
    assert get(first, big).body.startswith(b"body 3")


def test_unsafe_method_invalidates_across_instances(
    pair: tuple[GatewayProcess, GatewayProcess], origin: Origin
) -> None:
    first, second = pair
    path = path_with(origin, "Cache-Control: max-age=60")
    get(first, path)
    eventually_hit(second, path)
    request(first.port, "DELETE", path)
    time.sleep(0.3)
    assert get(second, path).header("X-Cache") == "MISS"


def test_redis_outage_falls_back_to_the_upstream(origin: Origin) -> None:
    server = RedisServer()
    server.start()
    prefix = f"test:{uuid.uuid4().hex}:"
    gateway = GatewayProcess(gateway_config(origin, server.port, prefix))
    try:
        path = path_with(origin, "Cache-Control: max-age=60")
        get(gateway, path)
        assert eventually_hit(gateway, path).header("X-Cache") == "HIT"
        server.stop()
        started = time.monotonic()
        answers = [get(gateway, path) for _ in range(20)]
        assert all(a.status == 200 for a in answers), answers
        assert all(a.header("X-Cache") == "MISS" for a in answers)
        assert time.monotonic() - started < 15
        server.start()  # back: stored and served again
        deadline = time.monotonic() + 10
        while get(gateway, path).header("X-Cache") != "HIT":
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        gateway.stop()
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)
