"""UpstreamConnection driven through a fake transport: response framing, 1xx, resets, reuse."""

from __future__ import annotations

from typing import Any

import pytest

from potok.upstream.connection import UpstreamConnection
from potok.upstream.pool import ConnectionPool
from potok.upstream.target import Target
from tests.protocol.memory import FakeTransport, settle

REQUEST = b"GET / HTTP/1.1\r\nHost: up\r\n\r\n"


class Listener:
    """A ResponseListener that writes down every call."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.body = b""

    def response_head(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        length: int | None,
        has_body: bool,
    ) -> None:
        self.events.append(("head", status, reason, headers, length, has_body))

    def response_informational(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.events.append(("informational", status, headers))

    def response_body(self, data: bytes) -> None:
        self.body += data

    def response_complete(self, reusable: bool) -> None:
        self.events.append(("complete", reusable))

    def response_switching(self, headers: list[tuple[bytes, bytes]], early: bytes) -> None:
        self.events.append(("switching", headers, early))

    def upstream_failed(self, reason: str, before_response: bool) -> None:
        self.events.append(("failed", before_response, reason))

    def flush_client(self) -> None:
        pass

    def pause_client_reading(self) -> None:
        self.events.append(("pause client",))

    def resume_client_reading(self) -> None:
        self.events.append(("resume client",))

    def kinds(self) -> list[str]:
        return [event[0] for event in self.events]


def upstream() -> tuple[UpstreamConnection, FakeTransport]:
    target = Target("http://10.0.0.5:8000", 1, ConnectionPool(4, 60.0))
    connection = UpstreamConnection(target)
    transport = FakeTransport(connection, peer=("10.0.0.5", 8000), sock=("127.0.0.1", 40001))
    connection.connection_made(transport)
    return connection, transport


def request(
    connection: UpstreamConnection, *, head: bool = False, chunked: bool = False
) -> Listener:
    listener = Listener()
    connection.send_request(
        listener,
        REQUEST.replace(b"GET", b"HEAD") if head else REQUEST,
        head_request=head,
        chunked=chunked,
    )
    return listener


async def test_a_content_length_response_and_the_headers_not_relayed() -> None:
    connection, transport = upstream()
    listener = request(connection)
    assert transport.take() == REQUEST
    transport.send(
        b"HTTP/1.1 200 Fine\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
        b"Connection: keep-alive, X-Hop\r\nX-Hop: h\r\nKeep-Alive: timeout=5\r\n"
        b"X-Request-ID: upstream-id\r\nX-Kept: k\r\n\r\nhello"
    )
    assert listener.events[0] == (
        "head",
        200,
        b"Fine",
        [(b"Content-Type", b"text/plain"), (b"X-Kept", b"k")],
        5,
        True,
    )
    assert listener.body == b"hello"
    assert listener.events[-1] == ("complete", True)


async def test_a_chunked_response_is_decoded_and_its_trailers_are_not_headers() -> None:
    connection, transport = upstream()
    listener = request(connection)
    transport.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n")
    assert listener.kinds() == ["head"] and listener.events[0][4] is None  # no length
    assert listener.body == b"wiki"  # streamed as it comes
    transport.send(b"5\r\npedia\r\n0\r\nX-Trailer: t\r\n\r\n")
    assert listener.body == b"wikipedia"
    assert listener.events[0][3] == []
    assert listener.events[-1] == ("complete", True)


async def test_a_response_split_into_single_bytes() -> None:
    connection, transport = upstream()
    listener = request(connection)
    transport.send_bytewise(
        b"HTTP/1.1 201 Created\r\nLocation: /x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
    )
    assert listener.events[0][:4] == ("head", 201, b"Created", [(b"Location", b"/x")])
    assert listener.body == b"abc" and listener.events[-1] == ("complete", True)


async def test_a_body_delimited_by_the_close_ends_with_the_connection() -> None:
    connection, transport = upstream()
    listener = request(connection)
    transport.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ")
    transport.send(b"the end")
    assert listener.kinds() == ["head"]
    transport.reset()  # the upstream closes: that is the end of the body
    assert listener.body == b"until the end"
    assert listener.events[-1] == ("complete", False)
    assert connection.closed


async def test_informational_responses_before_the_final_one() -> None:
    connection, transport = upstream()
    listener = request(connection)
    transport.send(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    # 100 is the gateway's own business (it answers Expect itself); 103 is relayed.
    assert listener.events == [
        ("informational", 103, [(b"Link", b"</style.css>; rel=preload")]),
        ("head", 200, b"OK", [], 2, True),
        ("complete", True),
    ]
    assert listener.body == b"ok"


@pytest.mark.parametrize(
    ("sent", "before_response"),
    [
        (b"", True),
        (b"HTTP/1.1 200 OK\r\nContent-Len", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", False),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nhalf\r\n", False),
    ],
)
async def test_an_upstream_reset_is_a_failure_before_or_after_the_head(
    sent: bytes, before_response: bool
) -> None:
    connection, transport = upstream()
    listener = request(connection)
    if sent:
        transport.send(sent)
    transport.reset(ConnectionResetError("reset by peer"))
    failed = listener.events[-1]
    assert failed[:2] == ("failed", before_response)
    assert "reset by peer" in failed[2]
    assert connection.closed


async def test_a_connection_is_reused_for_the_next_request_unless_told_to_close() -> None:
    connection, transport = upstream()
    first = request(connection)
    transport.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
    assert first.events[-1] == ("complete", True)
    connection.target.pool.release(connection)
    assert connection.target.pool.acquire() is connection
    second = request(connection)
    assert connection.requests_sent == 2
    transport.send(b"HTTP/1.1 404 Not Found\r\nContent-Length: 1\r\nConnection: close\r\n\r\nb")
    assert second.events[0][1] == 404 and second.body == b"b"
    assert second.events[-1] == ("complete", False)  # the upstream will close it
    assert first.body == b"a"  # the first listener heard nothing of the second response


async def test_an_http_1_0_response_is_not_reusable() -> None:
    connection, transport = upstream()
    listener = request(connection)
    transport.send(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert listener.events[-1] == ("complete", False)


async def test_a_head_response_ends_without_waiting_for_a_body() -> None:
    connection, transport = upstream()
    listener = request(connection, head=True)
    transport.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    assert listener.events == [("head", 200, b"OK", [], 1234, False), ("complete", True)]
    # The connection can carry the next request: its parser was not left waiting for 1234 bytes.
    second = request(connection)
    transport.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert second.body == b"ok" and second.events[-1] == ("complete", True)


@pytest.mark.parametrize("status", [204, 304])
async def test_responses_without_a_body(status: int) -> None:
    connection, transport = upstream()
    listener = request(connection)
    transport.send(b'HTTP/1.1 %d X\r\nETag: "e"\r\n\r\n' % status)
    assert listener.events[0][4:] == (None, False)
    assert listener.events[-1] == ("complete", True)


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\n\r\n",  # obsolete line folding
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
    ],
)
async def test_invalid_http_from_the_upstream_aborts_the_connection(head: bytes) -> None:
    """Framing the gateway cannot trust (the smuggling shapes among them) is never relayed."""
    connection, transport = upstream()
    listener = request(connection)
    transport.send(head)
    assert listener.events[-1][:2] == ("failed", True)
    assert "invalid HTTP from upstream" in listener.events[-1][2]
    assert transport.aborted and connection.closed
    await settle()
    assert listener.kinds().count("failed") == 1  # connection_lost does not report it again


async def test_a_transfer_coding_besides_chunked_fails_the_response_by_name() -> None:
    connection, transport = upstream()
    listener = request(connection)
    transport.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
    assert listener.events[-1][:2] == ("failed", True)
    assert "transfer coding the gateway does not decode: 'gzip, chunked'" in listener.events[-1][2]
    assert transport.aborted


async def test_bytes_on_an_idle_connection_abort_it() -> None:
    connection, transport = upstream()
    listener = request(connection)
    transport.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    connection.target.pool.release(connection)
    transport.send(b"HTTP/1.1 200 OK\r\n")  # nobody asked
    assert transport.aborted
    await settle()
    assert connection.target.pool.acquire() is None
    assert listener.events[-1] == ("complete", True)


async def test_an_idle_pooled_connection_closed_by_the_upstream_leaves_the_pool() -> None:
    connection, transport = upstream()
    request(connection)
    transport.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    connection.target.pool.release(connection)
    assert len(connection.target.pool) == 1
    transport.reset()
    assert len(connection.target.pool) == 0


async def test_a_chunked_request_body_is_framed_on_the_way_up() -> None:
    connection, transport = upstream()
    request(connection, chunked=True)
    transport.take()
    connection.write_body(b"hello")
    connection.write_body(b"")  # nothing: an empty chunk would end the body
    connection.write_body(b" world")
    connection.end_body()
    assert transport.take() == b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"


async def test_write_back_pressure_and_reading_pauses() -> None:
    connection, transport = upstream()
    listener = request(connection)
    transport.fill()  # the upstream is slow to take the request body
    transport.drain()
    assert listener.events == [("pause client",), ("resume client",)]
    connection.pause_reading()
    connection.pause_reading()  # idempotent
    assert transport.reading_calls == ["pause"]
    connection.target.pool.release(connection)  # released: reading again
    assert transport.reading_calls == ["pause", "resume"]


async def test_a_101_switches_to_a_tunnel_with_the_early_bytes() -> None:
    connection, transport = upstream()
    listener = request(connection)
    transport.send(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
        b"Sec-WebSocket-Accept: abc\r\n\r\n\x81\x02hi"
    )
    assert listener.events == [
        (
            "switching",
            [(b"Sec-WebSocket-Accept", b"abc"), (b"Upgrade", b"websocket")],
            b"\x81\x02hi",
        )
    ]
    client = FakeTransport(connection)  # stands for the client's transport
    connection.start_tunnel(client)
    transport.send(b"more frames")
    assert client.take() == b"more frames"
    transport.reset()
    assert client.closing  # the client side of the tunnel is closed with it


async def test_an_upgrade_header_on_a_200_is_not_a_switch() -> None:
    connection, transport = upstream()
    listener = request(connection)
    transport.send(
        b"HTTP/1.1 200 OK\r\nUpgrade: x\r\nConnection: upgrade\r\nContent-Length: 0\r\n\r\n"
    )
    assert listener.events[-1] == ("complete", True)  # Upgrade on a 200 is not a switch
