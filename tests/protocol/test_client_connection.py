"""ClientConnection driven through a fake transport: parsing, pipelining, limits, flow control."""

from __future__ import annotations

import asyncio
import json

import pytest

from potok.http.settings import ServerSettings
from potok.server.body import BUFFER_HIGH_WATER
from potok.server.connection import ClientConnection
from potok.server.state import BUSY, IDLE, READING_HEAD, ServerState
from tests.protocol.memory import (
    FakeTransport,
    RecordingHandler,
    connect_client,
    read_response,
    read_responses,
    server_state,
    settle,
)

GET = b"GET /items?id=7 HTTP/1.1\r\nHost: api.example\r\nAccept: */*\r\n\r\n"
SMALL = ServerSettings(max_url_bytes=64, max_header_bytes=256, max_headers=6, max_body_bytes=100)


class Client:
    """A recording handler behind one client connection."""

    def __init__(self, settings: ServerSettings | None = None) -> None:
        self.handler = RecordingHandler()
        self.state: ServerState = server_state(self.handler, settings)
        self.transport: FakeTransport = connect_client(self.state)
        protocol = self.transport.protocol
        assert isinstance(protocol, ClientConnection)
        self.connection = protocol

    def answer(self, index: int = -1, body: bytes = b"ok") -> None:
        self.handler.handled[index].respond(200, body, b"text/plain")


def problem(data: bytes) -> tuple[int, dict[str, object], bytes | None]:
    response = read_response(data)
    assert response.header("Content-Type") == b"application/problem+json"
    return response.status, json.loads(response.body), response.header("Connection")


async def test_a_simple_get_is_parsed_and_answered_with_keep_alive() -> None:
    client = Client()
    client.transport.send(GET)
    (exchange,) = client.handler.handled
    assert (exchange.method, exchange.path, exchange.query) == (b"GET", b"/items", b"?id=7")
    assert exchange.host == b"api.example"
    assert exchange.headers == [(b"Accept", b"*/*")]  # Host is pulled out, not forwarded as-is
    assert exchange.peer_ip == "203.0.113.7"
    assert exchange.body.complete and exchange.body.received == 0
    assert exchange.request_id  # made by the gateway
    assert client.connection.phase == BUSY
    client.answer()
    response = read_response(client.transport.take())
    assert (response.status, response.body, response.complete) == (200, b"ok", True)
    assert response.header("X-Request-ID") == exchange.request_id.encode()
    assert response.header("Connection") is None
    assert response.header("Content-Length") == b"2"
    assert client.handler.finished_exchanges == [exchange]
    assert client.connection.phase == IDLE and not client.transport.closing


async def test_a_request_fed_one_byte_at_a_time_parses_the_same() -> None:
    client = Client()
    client.transport.send_bytewise(GET)
    (exchange,) = client.handler.handled
    assert (exchange.path, exchange.query, exchange.host) == (b"/items", b"?id=7", b"api.example")
    assert exchange.headers == [(b"Accept", b"*/*")]


async def test_a_client_request_id_is_kept_and_an_invalid_one_replaced() -> None:
    client = Client()
    client.transport.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-ID: abc-123\r\n\r\n")
    assert client.handler.handled[0].request_id == "abc-123"
    client.answer()
    client.transport.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-ID: <script>\r\n\r\n")
    assert client.handler.handled[1].request_id not in ("", "<script>")


async def test_pipelined_requests_are_answered_in_order_one_at_a_time() -> None:
    client = Client()
    client.transport.send(b"GET /0 HTTP/1.1\r\nHost: a\r\n\r\n")
    # More requests while one is being answered: queued, and reading stops.
    client.transport.send(b"".join(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in (1, 2)))
    assert [e.path for e in client.handler.handled] == [b"/0"]
    assert not client.transport.reading
    for i in range(3):
        client.answer(i, body=b"answer %d" % i)
    assert [e.path for e in client.handler.handled] == [b"/0", b"/1", b"/2"]
    responses = read_responses(client.transport.take())
    assert [r.body for r in responses] == [b"answer 0", b"answer 1", b"answer 2"]
    assert client.transport.reading  # resumed once the last queued request started
    assert client.transport.reading_calls == ["pause", "resume"]


async def test_many_pipelined_requests_answered_at_once_do_not_recurse() -> None:
    """Answering inside handle() (a 404 does) must loop, not nest, over the queue."""

    class AnswerAtOnce(RecordingHandler):
        def handle(self, exchange: object) -> None:
            super().handle(exchange)  # type: ignore[arg-type]
            exchange.respond(404, b"", b"text/plain")  # type: ignore[attr-defined]

    handler = AnswerAtOnce()
    transport = connect_client(server_state(handler))
    transport.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" * 3000)
    assert len(handler.handled) == 3000
    assert [r.status for r in read_responses(transport.take())] == [404] * 3000


async def test_a_chunked_body_is_decoded_and_trailers_are_dropped() -> None:
    client = Client()
    client.transport.send(
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    (exchange,) = client.handler.handled  # dispatched on the head, before the body ends
    assert exchange.content_length is None and not exchange.body.complete
    client.transport.send(b"6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    assert await exchange.body.read_all() == b"hello world"
    assert exchange.body.complete
    assert all(name != b"X-Trailer" for name, _ in exchange.headers)
    client.answer()
    assert read_response(client.transport.take()).status == 200


async def test_a_content_length_body_arriving_in_pieces() -> None:
    client = Client()
    client.transport.send(b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234")
    (exchange,) = client.handler.handled
    assert exchange.content_length == 10 and exchange.body.received == 5
    client.transport.send(b"56789")
    assert await exchange.body.read_all() == b"0123456789"


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET http://elsewhere/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # TLS to a plain-HTTP port
    ],
)
async def test_a_malformed_request_gets_400_problem_json_and_the_connection_closes(
    raw: bytes,
) -> None:
    client = Client()
    client.transport.send(raw)
    assert client.handler.handled == []
    status, document, connection = problem(client.transport.take())
    assert status == 400 and document["status"] == 400
    assert document["request_id"]
    assert connection == b"close"
    assert client.transport.closing
    await settle()
    assert client.transport.lost and client.connection not in client.state.connections


async def test_a_malformed_request_behind_a_good_one_is_answered_after_it() -> None:
    client = Client()
    client.transport.send(b"GET /good HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/9.9 garbage\r\n\r\n")
    assert [e.path for e in client.handler.handled] == [b"/good"]
    assert client.transport.take() == b""  # nothing before the first answer
    client.answer()
    first, second = read_responses(client.transport.take())
    assert (first.status, first.body) == (200, b"ok")
    # RFC 9112 9.6: after a response with `Connection: close` a server processes no further
    # request, and a client reads no further response: the 400 would be lost or refused.
    assert first.header("Connection") is None
    assert second.status == 400 and second.header("Connection") == b"close"
    assert client.transport.closing


async def test_nothing_is_written_after_a_response_that_ends_the_connection() -> None:
    """Bytes sent after a `Connection: close` request are refused by the parser; that
    refusal must not follow a response that ends the connection (for a body delimited by
    the close it would become part of the body)."""
    client = Client()
    client.transport.send(b"GET /a HTTP/1.0\r\n\r\n")
    client.transport.send(b"GET /b HTTP/1.0\r\n\r\n")
    exchange = client.handler.handled[0]
    exchange.send_head(200, [(b"Content-Type", b"text/plain")])  # no length: until close
    exchange.send_body(b"the whole body")
    exchange.end()
    assert client.transport.take() == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        b"X-Request-ID: " + exchange.request_id.encode() + b"\r\n\r\nthe whole body"
    )
    assert client.transport.closing


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-A: 1\r\n" * 7 + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"v" * 300 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\n\r\n", 417),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    ],
)
async def test_limits_and_unsupported_requests_are_refused_with_their_status(
    raw: bytes, status: int
) -> None:
    client = Client(SMALL)
    client.transport.send(raw)
    got, document, connection = problem(client.transport.take())
    assert (got, document["status"], connection) == (status, status, b"close")
    assert client.handler.handled == []
    assert client.transport.closing


async def test_a_head_that_never_ends_is_refused_431_before_it_is_held_whole() -> None:
    client = Client(SMALL)
    client.transport.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ")
    limit = SMALL.max_head_total
    sent = 0
    while not client.transport.closing:
        client.transport.send(b"v" * 1024)
        sent += 1024
        assert sent <= limit + 1024
    assert problem(client.transport.take())[0] == 431


async def test_a_content_length_body_over_the_limit_is_413_as_it_arrives() -> None:
    client = Client(SMALL)
    client.transport.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n")
    (exchange,) = client.handler.handled  # a route's request_size policy may allow more
    client.transport.send(b"x" * 101)
    status, _, connection = problem(client.transport.take())
    assert (status, connection, exchange.status) == (413, b"close", 413)
    assert client.transport.closing


async def test_a_chunked_body_over_the_limit_is_413_while_streaming() -> None:
    client = Client(SMALL)
    client.transport.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    (exchange,) = client.handler.handled  # being answered when the body turns too large
    client.transport.send(b"40\r\n" + b"x" * 64 + b"\r\n")
    client.transport.send(b"40\r\n" + b"x" * 64 + b"\r\n")
    status, _, connection = problem(client.transport.take())
    assert (status, connection) == (413, b"close")
    assert exchange.status == 413
    assert client.transport.closing


async def test_expect_100_continue_is_sent_only_when_the_body_is_wanted() -> None:
    client = Client()
    client.transport.send(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    )
    (exchange,) = client.handler.handled
    assert exchange.expect_continue
    assert client.transport.take() == b""  # a handler that refuses need not take the body
    reading = asyncio.ensure_future(exchange.body.read_all())
    await settle()
    assert client.transport.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    client.transport.send(b"data")
    assert await reading == b"data"
    client.answer()
    response = read_response(client.transport.take())
    assert response.status == 200 and response.header("Connection") is None


async def test_expect_100_continue_refused_without_reading_the_body_closes() -> None:
    client = Client()
    client.transport.send(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    )
    client.handler.handled[0].problem(403, "no")
    response = read_response(client.transport.take())  # no 100 Continue before it
    assert response.status == 403
    # The unread body would be parsed as the next request: the connection must end.
    assert response.header("Connection") == b"close"
    assert client.transport.closing


@pytest.mark.parametrize(
    ("request_line", "extra", "connection_header", "stays_open"),
    [
        (b"GET / HTTP/1.1", b"", None, True),
        (b"GET / HTTP/1.1", b"Connection: close\r\n", b"close", False),
        (b"GET / HTTP/1.0", b"", b"close", False),
        (b"GET / HTTP/1.0", b"Connection: keep-alive\r\n", b"keep-alive", True),
    ],
)
async def test_keep_alive_and_close(
    request_line: bytes, extra: bytes, connection_header: bytes | None, stays_open: bool
) -> None:
    client = Client()
    client.transport.send(request_line + b"\r\nHost: a\r\n" + extra + b"\r\n")
    client.answer()
    response = read_response(client.transport.take())
    assert response.header("Connection") == connection_header
    await settle()
    assert client.transport.lost is not stays_open
    if stays_open:
        client.transport.send(request_line + b"\r\nHost: a\r\n" + extra + b"\r\n")
        assert len(client.handler.handled) == 2


async def test_a_streamed_answer_is_chunked_for_1_1_and_close_delimited_for_1_0() -> None:
    for version, framing in ((b"1.1", b"chunked"), (b"1.0", None)):
        client = Client()
        client.transport.send(b"GET / HTTP/" + version + b"\r\nHost: a\r\n\r\n")
        exchange = client.handler.handled[0]
        exchange.send_head(200, [(b"Content-Type", b"text/plain")])
        exchange.send_body(b"part one, ")
        client.connection.flush()
        exchange.send_body(b"part two")
        exchange.end()
        response = read_response(client.transport.take())
        assert response.header("Transfer-Encoding") == framing
        assert response.body == b"part one, part two"
        if framing is None:
            assert response.header("Connection") == b"close" and client.transport.closing


async def test_headers_named_in_connection_and_hop_by_hop_ones_are_dropped() -> None:
    client = Client()
    client.transport.send(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Secret, keep-alive\r\nX-Secret: s\r\n"
        b"Keep-Alive: timeout=5\r\nTE: trailers\r\nX-Kept: k\r\n\r\n"
    )
    assert client.handler.handled[0].headers == [(b"X-Kept", b"k")]


async def test_a_body_buffered_with_nobody_reading_pauses_the_client() -> None:
    client = Client(ServerSettings(max_body_bytes=4 * BUFFER_HIGH_WATER))
    size = 2 * BUFFER_HIGH_WATER
    client.transport.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
    exchange = client.handler.handled[0]
    piece = b"x" * 65536
    while client.transport.reading:
        client.transport.send(piece)
    assert BUFFER_HIGH_WATER < exchange.body.received < size
    reading = asyncio.ensure_future(exchange.body.read_all())
    await settle()
    assert client.transport.reading  # the consumer took the buffer: read again
    while exchange.body.received < size:
        client.transport.send(piece)
        await settle(1)
    assert len(await reading) == size


async def test_a_handler_that_raises_gets_500_and_the_connection_lives_on() -> None:
    client = Client()
    client.handler.fail_with = RuntimeError("bug")
    client.transport.send(GET)
    status, _, connection = problem(client.transport.take())
    assert status == 500 and connection is None
    client.handler.fail_with = None
    client.transport.send(GET)
    client.answer()
    assert read_response(client.transport.take()).status == 200


async def test_write_back_pressure_reaches_the_producer_and_drain() -> None:
    class Producer:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def pause_reading(self) -> None:
            self.calls.append("pause")

        def resume_reading(self) -> None:
            self.calls.append("resume")

    client = Client()
    client.transport.send(GET)
    exchange = client.handler.handled[0]
    producer = Producer()
    exchange.producer = producer
    client.transport.fill()
    assert producer.calls == ["pause"]
    drained = asyncio.ensure_future(client.connection.drain())
    await settle()
    assert not drained.done()
    client.transport.drain()
    await settle()
    assert drained.done() and producer.calls == ["pause", "resume"]


async def test_client_gone_mid_request_cancels_the_work_with_499() -> None:
    client = Client()
    client.transport.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01")
    exchange = client.handler.handled[0]
    cancelled: list[bool] = []
    exchange.on_cancel = lambda: cancelled.append(True)
    client.transport.fill()
    drained = asyncio.ensure_future(client.connection.drain())
    await settle()
    client.transport.reset(ConnectionResetError("peer reset"))
    await settle()
    assert exchange.status == 499 and cancelled == [True]
    assert client.handler.finished_exchanges == [exchange]
    assert not client.connection.is_current(exchange)
    assert isinstance(drained.exception(), ConnectionResetError)
    exchange.respond(200, b"late", b"text/plain")  # an answer for nobody writes nothing
    assert client.transport.written == [] and client.transport.written_after_close == []
    assert client.connection not in client.state.connections


async def test_client_gone_with_requests_queued_drops_them() -> None:
    client = Client()
    client.transport.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
    client.transport.reset()
    client.answer(0)
    await settle()
    assert [e.path for e in client.handler.handled] == [b"/1"]  # /2 never started


async def test_the_sweeper_refuses_a_slow_head_with_408_and_closes_idle_connections() -> None:
    client = Client()
    client.transport.send(b"GET / HTTP/1.1\r\nHost: a\r\n")
    assert client.connection.phase == READING_HEAD
    client.connection.expire()
    assert problem(client.transport.take())[0] == 408
    idle = Client()
    idle.connection.expire()
    assert idle.transport.closing and idle.transport.take() == b""


async def test_a_big_body_nobody_read_does_not_leave_the_connection_paused() -> None:
    """A body that arrived whole but over the buffer's high-water mark, answered without
    being read (a 404, a refusal): the next request on the connection must be read."""
    client = Client(ServerSettings(max_body_bytes=4 * BUFFER_HIGH_WATER))
    size = BUFFER_HIGH_WATER + 1
    client.transport.send(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size
    )
    exchange = client.handler.handled[0]
    assert exchange.body.complete
    exchange.problem(404, "no route")
    response = read_response(client.transport.take())
    assert response.status == 404 and response.header("Connection") is None
    assert client.transport.reading
    client.transport.send(GET)
    assert len(client.handler.handled) == 2
