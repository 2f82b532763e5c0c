"""Stale serving through the real gateway: stale-while-revalidate (one background
refresh), stale-if-error for upstream errors and for an unreachable upstream, and the
last good response while the service's circuit breaker is open."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.net import Response, ResponseReader, build_request, connect, request
from tests.support.upstream import RawUpstream, read_request_head


class Origin:
    """Answers every path with `headers`, a body counting its requests, and `status`."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.status: dict[str, int] = {}
        self.delay: dict[str, float] = {}
        self.padding: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.raw = RawUpstream(self.handle)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await read_request_head(reader)
            path = head.split(b" ", 2)[1].decode()
            with self.lock:
                self.counts[path] = self.counts.get(path, 0) + 1
                count = self.counts[path]
            await asyncio.sleep(self.delay.get(path, 0.0))
            body = b"body %d" % count + b"." * self.padding.get(path, 0)
            status = self.status.get(path, 200)
            extra = self.headers.get(path, "")
            writer.write(
                f"HTTP/1.1 {status} X\r\n{extra}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.raw.stop()


def gateway_for(url: str, breaker: bool = False) -> GatewayProcess:
    service: dict[str, object] = {"targets": [url], "retry": {"attempts": 1}}
    if breaker:
        service["circuit_breaker"] = {"consecutive_failures": 2, "open_for": "60s"}
    return GatewayProcess(
        {
            "services": {"up": service},
            "routes": [
                {
                    "name": "c",
                    "match": {"prefix": "/"},
                    "service": "up",
                    "policies": {"cache": {"x_cache": True}},
                }
            ],
        }
    )


@pytest.fixture(scope="module")
def gateway(origin: Origin) -> Iterator[GatewayProcess]:
    process = gateway_for(origin.raw.url)
    yield process
    process.stop()


def path_with(origin: Origin, headers: str) -> str:
    path = "/" + uuid.uuid4().hex
    origin.headers[path] = headers
    return path


def get(gateway: GatewayProcess, path: str) -> Response:
    return request(gateway.port, "GET", path)


def test_stale_while_revalidate_serves_stale_and_refreshes_once(
    gateway: GatewayProcess, origin: Origin
) -> None:
    path = path_with(origin, "Cache-Control: max-age=1, stale-while-revalidate=60")
    assert get(gateway, path).body == b"body 1"
    time.sleep(1.5)
    origin.delay[path] = 0.5  # the refresh takes a while: requests meanwhile get stale
    answers = [get(gateway, path) for _ in range(5)]
    assert all(a.body == b"body 1" and a.header("X-Cache") == "STALE" for a in answers)
    deadline = time.monotonic() + 10
    while get(gateway, path).body != b"body 2" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert origin.counts[path] == 2  # one background refresh for all those stale answers
    assert get(gateway, path).header("X-Cache") == "HIT"


def test_stale_if_error_on_5xx(gateway: GatewayProcess, origin: Origin) -> None:
    path = path_with(origin, "Cache-Control: max-age=1, stale-if-error=60")
    get(gateway, path)
    time.sleep(1.5)
    origin.status[path] = 502
    served = get(gateway, path)
    assert served.status == 200 and served.body == b"body 1"
    assert served.header("X-Cache") == "STALE"


def test_no_stale_if_error_past_must_revalidate(gateway: GatewayProcess, origin: Origin) -> None:
    path = path_with(origin, "Cache-Control: max-age=1, stale-if-error=60, must-revalidate")
    get(gateway, path)
    time.sleep(1.5)
    origin.status[path] = 502
    assert get(gateway, path).status == 502


def test_stale_if_error_when_upstream_unreachable_then_breaker_last_good() -> None:
    origin = Origin()
    process = gateway_for(origin.raw.url, breaker=True)
    try:
        error_ok = path_with(origin, "Cache-Control: max-age=1, stale-if-error=60")
        last_good = path_with(origin, "Cache-Control: max-age=1")
        strict = path_with(origin, "Cache-Control: max-age=1, must-revalidate")
        for path in (error_ok, last_good, strict):
            get(process, path)
        time.sleep(1.5)
        origin.raw.stop()  # connection refused from now on
        served = get(process, error_ok)
        assert served.status == 200 and served.body == b"body 1"
        assert get(process, strict).status == 502  # trips the breaker (2 failures)
        assert get(process, strict).status in (502, 503)
        # Open breaker: the last good response even without stale-if-error...
        opened = get(process, last_good)
        assert opened.status == 200 and opened.body == b"body 1"
        assert "fwd-status=503" in (opened.header("Cache-Status") or "")
        # ...but never one that must be revalidated.
        assert get(process, strict).status == 503
    finally:
        process.stop()


def test_single_flight_100_concurrent_misses_one_upstream_request(
    gateway: GatewayProcess, origin: Origin
) -> None:
    path = path_with(origin, "Cache-Control: max-age=60")
    origin.delay[path] = 1.0  # every request arrives while the first is still filling
    with ThreadPoolExecutor(100) as pool:
        answers = list(pool.map(lambda _: get(gateway, path), range(100)))
    assert all(a.status == 200 and a.body == b"body 1" for a in answers)
    assert origin.counts[path] == 1


def test_single_flight_uncacheable_answer_releases_waiters(
    gateway: GatewayProcess, origin: Origin
) -> None:
    path = path_with(origin, "Cache-Control: no-store")
    origin.delay[path] = 0.5
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: get(gateway, path), range(10)))
    assert all(a.status == 200 for a in answers)
    assert len({a.body for a in answers}) == origin.counts[path] == 10


def test_single_flight_on_keep_alive_connections(gateway: GatewayProcess, origin: Origin) -> None:
    """Waiters resumed inside the filling response's own callback once stalled
    keep-alive clients: each connection here sends 20 requests one after another."""
    path = path_with(origin, "Cache-Control: no-store")
    origin.delay[path] = 0.01

    def client(_: int) -> int:
        with connect(gateway.port) as sock:
            reader = ResponseReader(sock)
            for _ in range(20):
                sock.sendall(build_request("GET", path))
                assert reader.read().status == 200
        return 20

    with ThreadPoolExecutor(5) as pool:
        assert sum(pool.map(client, range(5))) == 100


def test_single_flight_filler_that_leaves_releases_its_waiters(
    gateway: GatewayProcess, origin: Origin
) -> None:
    """The filling client goes away: its waiters go upstream at once, not after the
    lock_timeout (5 s)."""
    path = path_with(origin, "Cache-Control: max-age=60")
    origin.delay[path] = 1.0
    with connect(gateway.port) as leaver:
        leaver.sendall(build_request("GET", path))
        time.sleep(0.3)  # it is filling now
        with ThreadPoolExecutor(1) as pool:
            waiter = pool.submit(get, gateway, path)
            time.sleep(0.3)
            leaver.close()
            started = time.monotonic()
            assert waiter.result().status == 200
    assert time.monotonic() - started < 3.5
