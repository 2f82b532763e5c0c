"""Faults: upstream down, hanging, resetting, cutting bodies, speaking nonsense; clients leaving."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from tests.support.gateway import GatewayProcess, simple_config
from tests.support.net import ResponseReader, build_request, connect, free_port, request
from tests.support.upstream import RawUpstream, read_request_head


def problem(response, status):
    assert response.status == status, response
    assert response.header("content-type") == "application/problem+json"
    doc = response.json()
    assert doc["status"] == status and doc["request_id"] == response.header("x-request-id")
    return doc


@pytest.fixture(scope="module")
def gateway(upstream):
    config = {
        "services": {
            "main": {"targets": [upstream.url], "timeouts": {"response": "500ms"}},
            "down": {"targets": [f"http://127.0.0.1:{free_port()}"]},
        },
        "routes": [
            {"name": "down", "match": {"prefix": "/down"}, "service": "down"},
            {
                "name": "deadline",
                "match": {"prefix": "/deadline"},
                "service": "main",
                "strip_prefix": True,
                "timeouts": {"request": "300ms"},
            },
            {"name": "all", "match": {"prefix": "/"}, "service": "main"},
        ],
    }
    process = GatewayProcess(config)
    yield process
    process.stop()


def test_unreachable_upstream_is_502(gateway):
    doc = problem(request(gateway.port, "GET", "/down/x"), 502)
    assert "cannot connect" in doc["detail"]


def test_hanging_upstream_is_504_at_response_timeout(gateway):
    started = time.monotonic()
    problem(request(gateway.port, "GET", "/hang"), 504)
    assert 0.4 < time.monotonic() - started < 3


def test_request_deadline_is_504(gateway):
    # Response timeout is 500 ms, the route deadline 300 ms: the deadline wins.
    started = time.monotonic()
    problem(request(gateway.port, "GET", "/deadline/slow?delay=2"), 504)
    assert time.monotonic() - started < 1.5


def test_other_requests_keep_flowing_while_one_hangs(gateway):
    with connect(gateway.port) as hanging:
        hanging.sendall(build_request("GET", "/hang"))
        for _ in range(20):
            assert request(gateway.port, "GET", "/echo").status == 200


def test_client_disconnect_closes_upstream_connection(upstream, start_gateway):
    seen: dict[str, int] = {"closed": 0}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        # Never answer; count the gateway closing its side.
        data = await reader.read(1)
        if data == b"":
            seen["closed"] += 1

    raw = RawUpstream(handler)
    try:
        gateway = start_gateway(simple_config(raw.url))
        for _ in range(5):
            sock = connect(gateway.port)
            sock.sendall(build_request("GET", "/x"))
            time.sleep(0.05)
            sock.close()
        gateway.wait_for(lambda: seen["closed"] == 5, timeout=5)
        health = request(gateway.port, "GET", "/api/v1/health").json()
        assert health["services"]["up"]["targets"][0]["in_flight"] == 0
        assert health["services"]["up"]["targets"][0]["idle_connections"] == 0
    finally:
        raw.stop()


def test_client_disconnect_mid_response_frees_everything(start_gateway, upstream):
    gateway = start_gateway(simple_config(upstream.url))
    for _ in range(3):
        sock = connect(gateway.port)
        sock.sendall(build_request("GET", "/stream?size=50000000&chunk=65536"))
        sock.recv(100000)
        sock.close()
    time.sleep(0.3)
    assert request(gateway.port, "GET", "/echo").status == 200
    health = request(gateway.port, "GET", "/api/v1/health").json()
    assert health["services"]["up"]["targets"][0]["in_flight"] == 0


def _raw_gateway(start_gateway, script):
    raw = RawUpstream(script)
    return raw, start_gateway(simple_config(raw.url))


def test_upstream_closing_mid_body_truncates_client_response(start_gateway):
    async def script(reader, writer):
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"a" * 100)
        await writer.drain()

    raw, gateway = _raw_gateway(start_gateway, script)
    try:
        with connect(gateway.port) as sock:
            sock.sendall(build_request("GET", "/cut"))
            with pytest.raises(ConnectionError):
                ResponseReader(sock).read()
        assert request(gateway.port, "GET", "/api/v1/health/liveness").status == 200
        log = gateway.access_log
        gateway.wait_for(lambda: any(e["path"] == "/cut" for e in log()))
    finally:
        raw.stop()


def test_upstream_closing_mid_chunked_body_truncates(start_gateway):
    async def script(reader, writer):
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()

    raw, gateway = _raw_gateway(start_gateway, script)
    try:
        with connect(gateway.port) as sock:
            sock.sendall(build_request("GET", "/cut"))
            with pytest.raises(ConnectionError):
                ResponseReader(sock).read()
    finally:
        raw.stop()


def test_upstream_reset_before_response_is_502(start_gateway):
    async def script(reader, writer):
        await read_request_head(reader)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()

    raw, gateway = _raw_gateway(start_gateway, script)
    try:
        problem(request(gateway.port, "POST", "/reset", body=b"x"), 502)
    finally:
        raw.stop()


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"deflate,chunked", b"x-custom, chunked"])
def test_an_upstream_transfer_coding_besides_chunked_is_502_not_relayed(start_gateway, coding):
    """De-chunking `gzip, chunked` would leave gzip bytes with nothing saying so."""

    async def script(reader, writer):
        await read_request_head(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + coding + b"\r\n\r\n"
            b"5\r\n\x1f\x8b\x08\x00\x00\r\n0\r\n\r\n"
        )
        await writer.drain()
        await asyncio.sleep(0.5)

    raw, gateway = _raw_gateway(start_gateway, script)
    try:
        response = request(gateway.port, "GET", "/coded")
        problem(response, 502)
        assert b"\x1f\x8b" not in response.body
    finally:
        raw.stop()


@pytest.mark.parametrize(
    "reply",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
    ],
)
def test_invalid_http_from_upstream_is_502(start_gateway, reply):
    async def script(reader, writer):
        await read_request_head(reader)
        writer.write(reply)
        await writer.drain()
        await asyncio.sleep(0.5)

    raw, gateway = _raw_gateway(start_gateway, script)
    try:
        response = None
        with connect(gateway.port) as sock:
            sock.sendall(build_request("GET", "/bad"))
            try:
                response = ResponseReader(sock).read()
            except ConnectionError:
                response = None
        # Either a clean 502 (nothing was sent yet) or a cut connection (head already relayed).
        if response is not None and response.status != 200:
            problem(response, 502)
        assert request(gateway.port, "GET", "/api/v1/health/liveness").status == 200
    finally:
        raw.stop()


def test_stale_pooled_connection_is_retried_transparently(start_gateway):
    """The upstream closes idle keep-alive connections; a GET on one must not fail."""
    served = {"n": 0}

    async def script(reader, writer):
        await read_request_head(reader)
        served["n"] += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        # Keep-alive advertised, but close right after answering (like a short upstream idle timeout).
        await asyncio.sleep(0.05)

    raw, gateway = _raw_gateway(start_gateway, script)
    try:
        for _ in range(5):
            response = request(gateway.port, "GET", "/x")
            assert response.status == 200 and response.body == b"ok"
            time.sleep(0.1)
    finally:
        raw.stop()


def test_slow_client_head_gets_408(upstream):
    process = GatewayProcess(
        {**simple_config(upstream.url), "server": {"timeouts": {"header_read": "1s"}}}
    )
    try:
        with connect(process.port) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            response = ResponseReader(sock).read()
            assert response.status == 408
            assert time.monotonic() - started < 3.5
    finally:
        process.stop()


def test_idle_keepalive_connection_closed(upstream):
    process = GatewayProcess(
        {**simple_config(upstream.url), "server": {"timeouts": {"keepalive": "1s"}}}
    )
    try:
        with connect(process.port) as sock:
            sock.sendall(build_request("GET", "/echo"))
            ResponseReader(sock).read()
            sock.settimeout(5)
            assert sock.recv(10) == b""
    finally:
        process.stop()
