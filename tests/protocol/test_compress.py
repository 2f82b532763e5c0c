"""The response side in memory: the compress policy's filter between a played upstream
and a played client, through the real Runtime, Gateway, ProxyCall and connections."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from typing import Any

import brotli
import pytest

from potok.server.state import ServerState
from tests.protocol.memory import (
    FakeTransport,
    MemoryNetwork,
    connect_client,
    memory_gateway,
    read_response,
    settle,
)

BODY = b"[" + b",".join(b'{"id":%d,"name":"item %d"}' % (i, i) for i in range(200)) + b"]"


def config(policies: dict[str, Any] | None = None, **route: Any) -> dict[str, Any]:
    return {
        "services": {
            "up": {
                "targets": ["http://10.0.0.5:8000"],
                "retry": {"attempts": 1},
            }
        },
        "routes": [
            {
                "match": {"prefix": "/api"},
                "service": "up",
                "policies": {"compress": {}} if policies is None else policies,
                **route,
            }
        ],
    }


@pytest.fixture
async def network(monkeypatch: pytest.MonkeyPatch) -> MemoryNetwork:
    memory = MemoryNetwork()
    memory.install(asyncio.get_running_loop(), monkeypatch)
    return memory


class Wire:
    def __init__(self, network: MemoryNetwork, gateway_config: dict[str, Any]) -> None:
        self.network = network
        self.state: ServerState
        self.state, _ = memory_gateway(gateway_config)
        self.client = connect_client(self.state)

    def get(self, accept: bytes | None = b"gzip", method: bytes = b"GET") -> None:
        extra = b"Accept-Encoding: " + accept + b"\r\n" if accept is not None else b""
        self.client.send(method + b" /api/x HTTP/1.1\r\nHost: gw\r\n" + extra + b"\r\n")

    async def upstream(self) -> FakeTransport:
        return await self.network.accept()


def json_head(length: int | None = None, extra: bytes = b"") -> bytes:
    framing = b"Content-Length: %d\r\n" % length if length is not None else b""
    framing = framing or b"Transfer-Encoding: chunked\r\n"
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + framing + extra + b"\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def test_a_known_length_answer_goes_out_compressed_and_chunked(
    network: MemoryNetwork,
) -> None:
    wire = Wire(network, config())
    wire.get(b"gzip")
    upstream = await wire.upstream()
    upstream.send(json_head(len(BODY), b'ETag: "v1"\r\n') + BODY)
    response = read_response(wire.client.take())
    assert response.complete
    assert response.header("Content-Encoding") == b"gzip"
    assert response.header("Content-Length") is None
    assert response.header("Transfer-Encoding") == b"chunked"
    assert response.header("Vary") == b"Accept-Encoding"
    assert response.header("ETag") == b'W/"v1"'
    assert gzip.decompress(response.body) == BODY


async def test_each_upstream_read_reaches_the_client_decodable(network: MemoryNetwork) -> None:
    """Server-sent events: a sync flush after each read, not only at the end."""
    wire = Wire(network, config())
    wire.get(b"gzip")
    upstream = await wire.upstream()
    upstream.send(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunk(b"data: one\n\n")
    )
    decoder = zlib.decompressobj(31)
    first = read_response(wire.client.take())
    assert not first.complete
    assert decoder.decompress(first.body) == b"data: one\n\n"
    upstream.send(chunk(b"data: two\n\n"))
    written = wire.client.take()
    # The next chunk of the client's chunked body, decodable on its own arrival.
    size, _, rest = written.partition(b"\r\n")
    assert decoder.decompress(rest[: int(size, 16)]) == b"data: two\n\n"
    upstream.send(b"0\r\n\r\n")
    assert wire.client.take().endswith(b"0\r\n\r\n")


async def test_client_back_pressure_still_pauses_the_upstream(network: MemoryNetwork) -> None:
    wire = Wire(network, config())
    wire.get(b"br")
    upstream = await wire.upstream()
    upstream.send(json_head() + chunk(BODY[:1000]))
    wire.client.fill()  # the client stops taking bytes
    assert not upstream.reading
    wire.client.drain()
    assert upstream.reading
    upstream.send(chunk(BODY[1000:]) + b"0\r\n\r\n")
    response = read_response(wire.client.take())
    assert response.complete and brotli.decompress(response.body) == BODY
    assert upstream.reading_calls == ["pause", "resume"]


async def test_a_client_accepting_nothing_of_ours_gets_it_as_it_is(
    network: MemoryNetwork,
) -> None:
    wire = Wire(network, config())
    wire.get(b"deflate")
    upstream = await wire.upstream()
    upstream.send(json_head(len(BODY)) + BODY)
    response = read_response(wire.client.take())
    assert response.header("Content-Length") == b"%d" % len(BODY)
    assert response.header("Content-Encoding") is None
    assert response.header("Vary") == b"Accept-Encoding"
    assert response.body == BODY


async def test_head_is_relayed_as_it_is(network: MemoryNetwork) -> None:
    wire = Wire(network, config())
    wire.get(b"gzip", method=b"HEAD")
    upstream = await wire.upstream()
    upstream.send(json_head(len(BODY)))
    data = wire.client.take()
    assert b"Content-Encoding" not in data
    assert b"Content-Length: %d" % len(BODY) in data


async def test_a_cut_upstream_aborts_the_client_through_the_filter(
    network: MemoryNetwork,
) -> None:
    wire = Wire(network, config())
    wire.get(b"zstd")
    upstream = await wire.upstream()
    upstream.send(json_head(len(BODY)) + BODY[:500])
    upstream.reset(ConnectionResetError("reset by peer"))
    await settle()
    assert wire.client.aborted


async def test_gateway_made_answers_are_not_compressed(network: MemoryNetwork) -> None:
    """A problem document (here a 502 for a reset upstream) never passes the filter."""
    wire = Wire(network, config())
    wire.get(b"gzip")
    upstream = await wire.upstream()
    upstream.reset(ConnectionResetError("reset by peer"))
    await settle()
    first = read_response(wire.client.take())
    assert first.status == 502
    assert first.header("Content-Encoding") is None
    assert first.header("Content-Length") is not None


async def test_a_route_without_response_filters_writes_to_the_exchange(
    network: MemoryNetwork,
) -> None:
    wire = Wire(network, config(policies={}))
    wire.get(b"gzip")
    upstream = await wire.upstream()
    upstream.send(json_head(len(BODY)) + BODY)
    response = read_response(wire.client.take())
    assert response.header("Content-Encoding") is None and response.body == BODY
