"""A request through the real Runtime and Gateway, in memory: fake client transport ->
ClientConnection -> Gateway -> route pipeline -> ProxyCall -> UpstreamConnection -> fake
upstream transport, and back. The test plays both the client and the upstream."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from potok.app import Gateway
from potok.server.state import ServerState
from tests.protocol.memory import (
    FakeTransport,
    MemoryNetwork,
    connect_client,
    memory_gateway,
    read_response,
    read_responses,
    settle,
)

UPSTREAM = ("10.0.0.5", 8000)
OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"


def config(**service: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"retry": {"attempts": 1}, **service}
    return {
        "services": {"up": {"targets": ["http://10.0.0.5:8000"], **settings}},
        "routes": [{"match": {"prefix": "/api"}, "service": "up"}],
    }


class Wire:
    """One client connection to an in-memory gateway whose upstream the test plays."""

    def __init__(self, network: MemoryNetwork, **service: Any) -> None:
        self.network = network
        self.state: ServerState
        self.gateway: Gateway
        self.state, self.gateway = memory_gateway(config(**service))
        self.client = connect_client(self.state)
        self.pool = self.gateway.runtime.services["up"].targets[0].pool

    async def upstream(self) -> FakeTransport:
        return await self.network.accept()

    def get(self, path: bytes = b"/api/items", extra: bytes = b"") -> None:
        self.client.send(b"GET " + path + b" HTTP/1.1\r\nHost: gw.example\r\n" + extra + b"\r\n")


@pytest.fixture
async def network(monkeypatch: pytest.MonkeyPatch) -> MemoryNetwork:
    memory = MemoryNetwork()
    memory.install(asyncio.get_running_loop(), monkeypatch)
    return memory


def request_head(raw: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    head, _, _ = raw.partition(b"\r\n\r\n")
    line, *lines = head.split(b"\r\n")
    return line, {k.lower(): v.strip() for k, _, v in (h.partition(b":") for h in lines)}


async def test_a_request_goes_up_and_the_answer_comes_back(network: MemoryNetwork) -> None:
    wire = Wire(network)
    wire.get(b"/api/items?x=1", b"Connection: X-Hop\r\nX-Hop: h\r\nX-Request-ID: rid-1\r\n")
    upstream = await wire.upstream()
    assert upstream.get_extra_info("peername") == UPSTREAM
    line, headers = request_head(upstream.take())
    assert line == b"GET /api/items?x=1 HTTP/1.1"
    assert headers[b"host"] == b"10.0.0.5:8000"
    assert headers[b"x-forwarded-for"] == b"203.0.113.7"
    assert headers[b"x-forwarded-host"] == b"gw.example"
    assert headers[b"x-request-id"] == b"rid-1"
    assert b"x-hop" not in headers and b"connection" not in headers
    upstream.send(OK.replace(b"\r\n\r\n", b"\r\nX-Request-ID: theirs\r\n\r\n"))
    response = read_response(wire.client.take())
    assert (response.status, response.body, response.complete) == (200, b"hello", True)
    assert response.header("Content-Length") == b"5"
    assert response.header_count("X-Request-ID") == 1
    assert response.header("X-Request-ID") == b"rid-1"  # the gateway's id, not the upstream's
    assert len(wire.pool) == 1 and wire.gateway.metrics.inflight_count == 0


async def test_keep_alive_reuses_the_upstream_connection(network: MemoryNetwork) -> None:
    wire = Wire(network)
    wire.get()
    upstream = await wire.upstream()
    upstream.take()
    upstream.send(OK)
    wire.get(b"/api/again")
    await settle()
    assert network.connects == 1
    assert upstream.take().startswith(b"GET /api/again HTTP/1.1\r\n")
    upstream.send(OK)
    assert [r.status for r in read_responses(wire.client.take())] == [200, 200]


async def test_pipelined_requests_go_up_one_after_another(network: MemoryNetwork) -> None:
    wire = Wire(network)
    wire.get(b"/api/1")
    upstream = await wire.upstream()
    wire.get(b"/api/2")
    assert upstream.take().startswith(b"GET /api/1 ")  # /2 waits for /1's answer
    upstream.send(OK.replace(b"hello", b"one!!"))
    assert upstream.take().startswith(b"GET /api/2 ")
    upstream.send(OK.replace(b"hello", b"two!!"))
    assert [r.body for r in read_responses(wire.client.take())] == [b"one!!", b"two!!"]
    assert network.connects == 1


async def test_a_route_that_does_not_match_never_reaches_the_upstream(
    network: MemoryNetwork,
) -> None:
    wire = Wire(network)
    wire.get(b"/elsewhere")
    response = read_response(wire.client.take())
    assert response.status == 404
    assert response.header("Content-Type") == b"application/problem+json"
    assert network.connects == 0


async def test_a_streamed_response_reaches_the_client_as_it_arrives(
    network: MemoryNetwork,
) -> None:
    wire = Wire(network)
    wire.get()
    upstream = await wire.upstream()
    upstream.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
    partial = read_response(wire.client.take())
    assert partial.header("Transfer-Encoding") == b"chunked"
    assert (partial.body, partial.complete) == (b"first", False)
    upstream.send(b"6\r\nsecond\r\n0\r\n\r\n")
    assert wire.client.take() == b"6\r\nsecond\r\n0\r\n\r\n"
    assert len(wire.pool) == 1


async def test_a_close_delimited_upstream_body_is_chunked_to_the_client(
    network: MemoryNetwork,
) -> None:
    wire = Wire(network)
    wire.get()
    upstream = await wire.upstream()
    upstream.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of ")
    upstream.send(b"it")
    upstream.reset()
    response = read_response(wire.client.take())
    assert response.header("Transfer-Encoding") == b"chunked"
    assert (response.body, response.complete) == (b"all of it", True)
    assert len(wire.pool) == 0 and not wire.client.closing  # the client keeps its connection


async def test_client_back_pressure_pauses_and_resumes_the_upstream(
    network: MemoryNetwork,
) -> None:
    wire = Wire(network)
    wire.get()
    upstream = await wire.upstream()
    upstream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
    wire.client.fill()  # the client stops taking bytes
    assert not upstream.reading
    wire.client.drain()
    assert upstream.reading
    upstream.send(b"56789")
    assert read_response(wire.client.take()).body == b"0123456789"
    assert upstream.reading_calls == ["pause", "resume"]


async def test_a_client_already_lagging_pauses_a_new_upstream_at_once(
    network: MemoryNetwork,
) -> None:
    wire = Wire(network)
    wire.get()
    wire.client.fill()
    upstream = await wire.upstream()
    assert not upstream.reading


async def test_upstream_reset_before_the_head_is_502(network: MemoryNetwork) -> None:
    wire = Wire(network)
    wire.get()
    upstream = await wire.upstream()
    upstream.reset(ConnectionResetError("reset by peer"))
    response = read_response(wire.client.take())
    assert response.status == 502
    assert response.header("Content-Type") == b"application/problem+json"
    document = json.loads(response.body)
    assert "reset by peer" in document["detail"]
    assert document["request_id"] == response.header("X-Request-ID").decode()  # type: ignore[union-attr]
    assert not wire.client.closing and wire.gateway.metrics.inflight_count == 0


async def test_a_refused_connection_is_502(network: MemoryNetwork) -> None:
    network.refused.add(UPSTREAM)
    wire = Wire(network)
    wire.get()
    await settle()
    response = read_response(wire.client.take())
    assert response.status == 502
    assert "cannot connect to 10.0.0.5:8000" in json.loads(response.body)["detail"]


async def test_a_reset_before_the_head_is_retried_on_a_new_connection(
    network: MemoryNetwork,
) -> None:
    wire = Wire(network, retry={"attempts": 2, "backoff": {"initial": "1ms"}})
    wire.get()
    first = await wire.upstream()
    first.reset(ConnectionResetError("reset by peer"))
    second = await wire.upstream()
    assert second.take().startswith(b"GET /api/items ")
    second.send(OK)
    assert read_response(wire.client.take()).status == 200


async def test_a_stale_pooled_connection_is_replayed_once_on_a_fresh_one(
    network: MemoryNetwork,
) -> None:
    """Not a retry (attempts is 1): a kept-alive connection the upstream had closed."""
    wire = Wire(network)
    wire.get()
    pooled = await wire.upstream()
    pooled.send(OK)
    wire.client.take()
    wire.get(b"/api/second")
    pooled.reset()  # closed by the upstream just as the request went out on it
    fresh = await wire.upstream()
    assert fresh.take().startswith(b"GET /api/second ")
    fresh.send(OK)
    assert read_response(wire.client.take()).status == 200


async def test_upstream_reset_mid_body_cuts_the_client_response(network: MemoryNetwork) -> None:
    wire = Wire(network)
    wire.get()
    upstream = await wire.upstream()
    upstream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
    upstream.reset(ConnectionResetError("reset by peer"))
    response = read_response(wire.client.take())
    assert (response.status, response.body, response.complete) == (200, b"only part", False)
    assert wire.client.aborted  # the client sees the truncation, not a short 200
    await settle()
    assert wire.gateway.metrics.inflight_count == 0


async def test_the_client_leaving_mid_response_drops_the_upstream(
    network: MemoryNetwork,
) -> None:
    wire = Wire(network)
    wire.get()
    upstream = await wire.upstream()
    upstream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome")
    wire.client.reset(ConnectionResetError("client gone"))
    assert upstream.aborted  # never back in the pool half-read
    await settle()
    assert len(wire.pool) == 0 and wire.gateway.metrics.inflight_count == 0


async def test_no_answer_in_time_is_504(network: MemoryNetwork) -> None:
    wire = Wire(network, timeouts={"response": "20ms"})
    wire.get()
    upstream = await wire.upstream()
    await asyncio.sleep(0.1)
    response = read_response(wire.client.take())
    assert response.status == 504
    assert upstream.aborted


async def test_a_streamed_request_body_goes_up_chunked(network: MemoryNetwork) -> None:
    wire = Wire(network)
    wire.client.send(
        b"POST /api/upload HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    upstream = await wire.upstream()
    line, headers = request_head(upstream.take())
    assert line == b"POST /api/upload HTTP/1.1"
    assert headers[b"transfer-encoding"] == b"chunked"
    wire.client.send(b"6\r\n world\r\n")
    wire.client.send(b"0\r\n\r\n")
    assert upstream.take() == b"6\r\n world\r\n0\r\n\r\n"
    upstream.send(OK)
    assert read_response(wire.client.take()).status == 200


async def test_a_content_length_body_goes_up_as_it_arrives(network: MemoryNetwork) -> None:
    wire = Wire(network)
    wire.client.send(b"PUT /api/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 8\r\n\r\nabcd")
    upstream = await wire.upstream()
    raw = upstream.take()
    assert request_head(raw)[1][b"content-length"] == b"8"
    assert raw.endswith(b"\r\n\r\nabcd")
    wire.client.send(b"efgh")
    assert upstream.take() == b"efgh"


async def test_expect_100_continue_is_answered_when_the_body_goes_up(
    network: MemoryNetwork,
) -> None:
    wire = Wire(network)
    wire.client.send(
        b"POST /api/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    )
    upstream = await wire.upstream()
    assert b"expect" not in request_head(upstream.take())[1]  # the gateway answers it
    assert wire.client.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    wire.client.send(b"data")
    assert upstream.take() == b"data"
    upstream.send(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)  # the upstream's own 100: not relayed
    response = read_response(wire.client.take())
    assert (response.status, response.body) == (200, b"hello")


async def test_early_hints_are_relayed_before_the_answer(network: MemoryNetwork) -> None:
    wire = Wire(network)
    wire.get()
    upstream = await wire.upstream()
    upstream.send(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + OK)
    hints, final = read_responses(wire.client.take())
    assert (hints.status, hints.header("Link")) == (103, b"</a.css>; rel=preload")
    assert (final.status, final.body) == (200, b"hello")


async def test_head_gets_the_length_without_a_body(network: MemoryNetwork) -> None:
    wire = Wire(network)
    wire.client.send(b"HEAD /api/x HTTP/1.1\r\nHost: gw\r\nX-Request-ID: h1\r\n\r\n")
    upstream = await wire.upstream()
    upstream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n")
    assert wire.client.take() == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nX-Request-ID: h1\r\n\r\n"
    )
    assert len(wire.pool) == 1  # reusable: nothing was left unread


async def test_an_upstream_5xx_is_relayed_as_it_is(network: MemoryNetwork) -> None:
    wire = Wire(network)
    wire.get()
    upstream = await wire.upstream()
    upstream.send(b"HTTP/1.1 503 Busy\r\nRetry-After: 3\r\nContent-Length: 4\r\n\r\nbusy")
    response = read_response(wire.client.take())
    assert (response.status, response.reason, response.body) == (503, b"Busy", b"busy")
    assert response.header("Retry-After") == b"3"


async def test_a_websocket_upgrade_becomes_a_tunnel(network: MemoryNetwork) -> None:
    wire = Wire(network)
    wire.get(b"/api/ws", b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n")
    upstream = await wire.upstream()
    _, headers = request_head(upstream.take())
    assert (headers[b"upgrade"], headers[b"connection"]) == (b"websocket", b"upgrade")
    upstream.send(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: a\r\n\r\nserver-first"
    )
    switched = wire.client.take()
    assert switched.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert switched.endswith(b"\r\n\r\nserver-first")
    wire.client.send(b"client frame")
    assert upstream.take() == b"client frame"
    upstream.send(b"server frame")
    assert wire.client.take() == b"server frame"
    wire.client.reset()
    assert upstream.closing  # the tunnel's far side ends with the client


async def test_a_slow_reading_upstream_that_answers_early_leaves_the_client_reading(
    network: MemoryNetwork,
) -> None:
    """The upstream's full write buffer paused the client; the answer came before the
    upstream took the body. The next request on the client connection must be read."""
    wire = Wire(network)
    wire.client.send(b"POST /api/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 8\r\n\r\nabcdefgh")
    upstream = await wire.upstream()
    upstream.fill()  # the body sits in the upstream transport's buffer
    assert not wire.client.reading
    upstream.send(OK)  # answered before reading the body (it will discard it later)
    assert read_response(wire.client.take()).status == 200
    upstream.drain()
    assert wire.client.reading
    wire.get(b"/api/next")
    await settle()
    upstream.send(OK)
    assert read_response(wire.client.take()).status == 200


async def test_a_replayable_body_over_the_buffer_mark_does_not_leave_the_client_paused(
    network: MemoryNetwork,
) -> None:
    """A PUT kept whole for replay is written from the copy, never attached: the pause its
    buffering caused must still end with the response."""
    wire = Wire(network, retry={"attempts": 2, "max_body_bytes": 1024 * 1024})
    size = 256 * 1024 + 1
    wire.client.send(
        b"PUT /api/x HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size
    )
    upstream = await wire.upstream()
    assert upstream.take().endswith(b"x" * size)
    upstream.send(OK)
    assert read_response(wire.client.take()).status == 200
    assert wire.client.reading
    wire.get(b"/api/next")
    await settle()
    assert upstream.take().startswith(b"GET /api/next ")
