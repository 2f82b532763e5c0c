"""Single-flight across workers and instances with the Redis store, through real
gateways sharing the real Redis (a unique key prefix per test) and a real upstream that
counts its requests: one fill lock per key, waiters take the holder's entry, and a
holder that goes away never stalls them beyond `lock_timeout`."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.net import Response, request
from tests.support.upstream import Upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.stop()


def cached(upstream: Upstream, prefix: str, lock_timeout: str = "5s") -> dict[str, object]:
    cache = {
        "store": "redis",
        "redis_prefix": prefix,
        "default_ttl": "60s",
        "lock_timeout": lock_timeout,
        "x_cache": True,
    }
    return {
        "services": {"up": {"targets": [upstream.url], "retry": {"attempts": 1}}},
        "routes": [
            {"name": "c", "match": {"prefix": "/"}, "service": "up", "policies": {"cache": cache}}
        ],
        "redis": {"url": "redis://127.0.0.1:6379/0"},
        # Requests to /hang never end: do not wait for them at shutdown.
        "server": {"timeouts": {"shutdown_grace": "1s"}},
    }


def storm(ports: list[int], path: str, count: int) -> list[Response]:
    """`count` GETs of `path` at once, spread over `ports`, each on its own connection."""
    start = threading.Barrier(count)

    def one(index: int) -> Response:
        start.wait()
        return request(ports[index % len(ports)], "GET", path, timeout=30)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def lock_metrics(port: int) -> tuple[float, float]:
    text = request(port, "GET", "/api/v1/metrics").body.decode()
    waits = timeouts = 0.0
    for line in text.splitlines():
        if line.startswith('cache_lock_waits_total{route="c"}'):
            waits = float(line.rsplit(" ", 1)[1])
        if line.startswith('cache_lock_timeouts_total{route="c"}'):
            timeouts = float(line.rsplit(" ", 1)[1])
    return waits, timeouts


@pytest.fixture(scope="module")
def pair(upstream: Upstream) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    prefix = f"test:{uuid.uuid4().hex}:"
    first = GatewayProcess(cached(upstream, prefix))
    second = GatewayProcess(cached(upstream, prefix))
    yield first, second
    first.stop()
    second.stop()


def test_100_misses_over_two_instances_send_one_upstream_request(
    pair: tuple[GatewayProcess, GatewayProcess], upstream: Upstream
) -> None:
    first, second = pair
    name = f"/slow/{uuid.uuid4().hex}"
    answers = storm([first.port, second.port], name + "?delay=0.5", 100)
    assert [a.status for a in answers] == [200] * 100
    assert upstream.hits[name] == 1
    assert {a.body for a in answers} == {answers[0].body}
    # The other instance's requests took the holder's entry from Redis.
    waits = lock_metrics(first.port)[0] + lock_metrics(second.port)[0]
    assert waits >= 1
    assert lock_metrics(first.port)[1] + lock_metrics(second.port)[1] == 0


def test_100_misses_over_two_workers_send_one_upstream_request(upstream: Upstream) -> None:
    gateway = GatewayProcess(cached(upstream, f"test:{uuid.uuid4().hex}:"), workers=2)
    try:
        name = f"/slow/{uuid.uuid4().hex}"
        answers = storm([gateway.port], name + "?delay=0.5", 100)
        assert [a.status for a in answers] == [200] * 100
        assert upstream.hits[name] == 1
    finally:
        gateway.stop()


def wait_hits(upstream: Upstream, name: str, count: int, timeout: float) -> float:
    """Seconds until the upstream has seen `count` requests for `name` (inf if never)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if upstream.hits[name] >= count:
            return time.monotonic() - start
        time.sleep(0.02)
    return float("inf")


def abandoned(port: int, path: str, after: float) -> None:
    """A GET whose client gives up after `after` seconds."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        sock.settimeout(after)
        with contextlib.suppress(TimeoutError):
            sock.recv(1)


@pytest.mark.parametrize("how", ["abandoned", "killed"])
def test_a_holder_that_dies_does_not_stall_waiters_beyond_the_bound(
    upstream: Upstream, how: str
) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    holder = GatewayProcess(cached(upstream, prefix, lock_timeout="1.5s"))
    waiter = GatewayProcess(cached(upstream, prefix, lock_timeout="1.5s"))
    try:
        name = f"/hang/{uuid.uuid4().hex}"
        client = threading.Thread(target=abandoned, args=(holder.port, name, 0.5))
        client.start()
        assert wait_hits(upstream, name, 1, 10) < 10  # the holder fills (and hangs)
        # Another instance's request for the key waits behind the holder's lock...
        waiting = threading.Thread(target=abandoned, args=(waiter.port, name, 10))
        waiting.start()
        if how == "killed":
            holder.process.kill()  # the lock stays in Redis until it expires
        # ...and reaches the upstream itself within lock_timeout, not later.
        took = wait_hits(upstream, name, 2, 10)
        assert took < 1.5 + 2.0, took
        client.join(5)
        assert lock_metrics(waiter.port)[0] == 1
    finally:
        holder.stop()
        waiter.stop()
