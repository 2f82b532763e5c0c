"""Request mirroring through the real gateway: a copy to a shadow service whose answers,
failures and slowness never reach the client."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.net import request
from tests.support.upstream import RawUpstream, Upstream


@pytest.fixture
def shadow() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.stop()


def mirrored(primary: str, shadow: str, **mirror: Any) -> dict[str, Any]:
    return {
        "services": {"main": {"targets": [primary]}, "shadow": {"targets": [shadow]}},
        "routes": [
            {
                "name": "orders",
                "match": {"prefix": "/"},
                "service": "main",
                "mirror": {"service": "shadow", **mirror},
            }
        ],
    }


def metric(body: str, result: str) -> float:
    found = re.search(
        rf'mirror_requests_total\{{result="{result}",route="orders"\}} ([\d.]+)', body
    )
    return float(found.group(1)) if found else 0.0


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met")


def test_every_request_is_copied_with_its_body_and_a_mirror_header(upstream, shadow, start_gateway):
    gateway = start_gateway(mirrored(upstream.url, shadow.url))
    for n in range(20):
        body = f"payload-{n}".encode()
        response = request(gateway.port, "POST", f"/orders/{n}?q=1", body=body)
        assert response.status == 200
    wait_for(lambda: len(shadow.requests) == 20)
    seen = sorted(shadow.requests, key=lambda r: r["path"])  # type: ignore[arg-type, return-value]
    assert {r["method"] for r in seen} == {"POST"}
    assert {r["path"] for r in seen} == {f"/orders/{n}?q=1" for n in range(20)}
    assert all(r["headers"]["X-Potok-Mirror"] == "orders" for r in seen)  # type: ignore[index]
    # The same request id on both copies: the shadow's logs line up with the primary's.
    primary_ids = {r["headers"]["X-Request-ID"] for r in upstream.requests[-20:]}  # type: ignore[index]
    assert {r["headers"]["X-Request-ID"] for r in seen} == primary_ids  # type: ignore[index]
    metrics = request(gateway.port, "GET", "/api/v1/metrics").body.decode()
    assert metric(metrics, "answered") == 20


def test_a_streamed_body_is_mirrored_whole_and_a_large_one_not_at_all(
    upstream, shadow, start_gateway
):
    gateway = start_gateway(mirrored(upstream.url, shadow.url, max_body="1KiB"))
    chunked = (
        b"POST /sink HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    from tests.support.net import ResponseReader, connect

    with connect(gateway.port) as sock:
        sock.sendall(chunked)
        assert ResponseReader(sock).read().status == 200
    wait_for(lambda: shadow.hits["/sink"] == 1)
    big = b"x" * 4096
    assert request(gateway.port, "POST", "/big", body=big).status == 200
    with connect(gateway.port) as sock:
        sock.sendall(
            b"POST /bigchunks HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"400\r\n" + b"y" * 1024 + b"\r\n" for _ in range(3))
            + b"0\r\n\r\n"
        )
        assert ResponseReader(sock).read().status == 200
    metrics = request(gateway.port, "GET", "/api/v1/metrics").body.decode()
    assert metric(metrics, "too_large") == 2
    assert shadow.hits["/big"] == 0 and shadow.hits["/bigchunks"] == 0
    assert upstream.hits["/big"] == 1 and upstream.hits["/bigchunks"] == 1


def test_a_failing_shadow_changes_nothing_for_the_client(upstream, shadow, start_gateway):
    shadow.fail_with = 500
    gateway = start_gateway(mirrored(upstream.url, shadow.url))
    statuses = [request(gateway.port, "GET", f"/ok/{n}").status for n in range(30)]
    assert statuses == [200] * 30
    wait_for(
        lambda: (
            metric(request(gateway.port, "GET", "/api/v1/metrics").body.decode(), "failed") == 30
        )
    )
    shadow.go_down()  # connection refused
    assert [request(gateway.port, "GET", f"/down/{n}").status for n in range(10)] == [200] * 10


async def _never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(3600)


def _latencies(port: int, count: int) -> list[float]:
    out = []
    for n in range(count):
        started = time.perf_counter()
        assert request(port, "GET", f"/l/{n}").status == 200
        out.append(time.perf_counter() - started)
    return sorted(out)


def test_a_hanging_shadow_neither_slows_the_client_nor_holds_unbounded_work(
    upstream, start_gateway
):
    hanging = RawUpstream(_never_answers)
    try:
        plain = start_gateway(
            {
                "services": {"main": {"targets": [upstream.url]}},
                "routes": [{"name": "orders", "match": {"prefix": "/"}, "service": "main"}],
            }
        )
        gateway = start_gateway(
            mirrored(upstream.url, hanging.url, max_in_flight=10, timeout="30s")
        )
        without = _latencies(plain.port, 200)
        with_shadow = _latencies(gateway.port, 200)
        p99_without, p99_with = without[197], with_shadow[197]
        # The same order of magnitude: the shadow adds no wait (a hanging shadow would add
        # 30 s). Generous: this machine's own jitter is several milliseconds.
        assert p99_with < max(3 * p99_without, p99_without + 0.05), (p99_without, p99_with)
        metrics = request(gateway.port, "GET", "/api/v1/metrics").body.decode()
        # Ten copies hang (the bound); every other request's copy was dropped, counted.
        assert metric(metrics, "busy") == 190
        assert hanging.connections <= 10
    finally:
        hanging.stop()


def test_percent_and_header_choose_what_is_copied(upstream, shadow, start_gateway):
    gateway = start_gateway(mirrored(upstream.url, shadow.url, header="X-Mirror-Me"))
    for n in range(10):
        request(gateway.port, "GET", f"/no/{n}")
        request(gateway.port, "GET", f"/yes/{n}", headers={"X-Mirror-Me": "1"})
    wait_for(lambda: len(shadow.requests) == 10)
    assert all(str(r["path"]).startswith("/yes/") for r in shadow.requests)
    none = start_gateway(mirrored(upstream.url, shadow.url, percent=0))
    before = len(shadow.requests)
    for n in range(20):
        request(none.port, "GET", f"/zero/{n}")
    time.sleep(0.3)
    assert len(shadow.requests) == before


def test_the_shadow_must_be_another_known_service(upstream, tmp_path):
    from tests.support.gateway import GatewayProcess

    config = mirrored(upstream.url, upstream.url)
    config["routes"][0]["mirror"]["service"] = "main"
    with pytest.raises(RuntimeError, match=r"mirror\.service: 'main' serves the route itself"):
        GatewayProcess(config)
    config["routes"][0]["mirror"]["service"] = "nowhere"
    with pytest.raises(
        RuntimeError, match=r"routes\[0\]\.mirror\.service: unknown service 'nowhere'"
    ):
        GatewayProcess(config)
