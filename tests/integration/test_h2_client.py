"""The HTTP/2 upstream client (potok/upstream/h2_client.py) against a real grpcio server on
loopback: unary and server-streaming calls, trailers (grpc-status, grpc-message, custom
trailing metadata) including trailers-only answers, multiplexing within the server's
stream limit, flow control both ways (a reader that stops reading stops the server; a
large request waits for the server's window), cancellation, GOAWAY, TLS with ALPN h2,
and the keep-alive pool.

The grpc service is generic with no (de)serializers, so messages are raw bytes (no protoc).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
import trustme

from potok.upstream.h2_client import (
    ConnectionClosed,
    GrpcDeframer,
    H2ClientConnection,
    H2Pool,
    H2Stream,
    StreamReset,
    grpc_frame,
)

SERVICE = "potok.test.Raw"
GRPC_HEADERS = [(b"content-type", b"application/grpc"), (b"te", b"trailers")]
BIG = 64 * 1024  # bytes per message of /Big
BIG_COUNT = 64  # 4 MiB in all


class RawService:
    """Handlers that take and give bytes, and what the server saw."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.big_sent = 0
        self.running = 0
        self.most_running = 0
        self.cancelled = threading.Event()

    def handlers(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Echo": grpc.unary_unary_rpc_method_handler(self.echo),
                "Size": grpc.unary_unary_rpc_method_handler(self.size),
                "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
                "Slow": grpc.unary_unary_rpc_method_handler(self.slow),
                "Linger": grpc.unary_unary_rpc_method_handler(self.linger),
                "Count": grpc.unary_stream_rpc_method_handler(self.count),
                "Big": grpc.unary_stream_rpc_method_handler(self.big),
                "Forever": grpc.unary_stream_rpc_method_handler(self.forever),
            },
        )

    def echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        context.set_trailing_metadata((("x-echoed", str(len(request))),))
        return request

    def size(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        return str(len(request)).encode()

    def fail(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + request.decode())
        raise AssertionError("abort raises")

    def slow(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        time.sleep(0.05)
        with self.lock:
            self.running -= 1
        return request

    def linger(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        time.sleep(0.5)
        return request

    def count(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for index in range(int(request)):
            yield b"%d" % index

    def big(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        block = b"b" * BIG
        for _ in range(BIG_COUNT):
            yield block
            with self.lock:
                self.big_sent += 1

    def forever(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        context.add_callback(self.cancelled.set)
        while context.is_active():
            yield b"tick"
            time.sleep(0.01)


class GrpcServer:
    def __init__(self, credentials: grpc.ServerCredentials | None = None, **options: Any) -> None:
        self.service = RawService()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=32),
            options=[
                ("grpc.max_receive_message_length", 16 * 1024 * 1024),
                *options.items(),
            ],
        )
        self.server.add_generic_rpc_handlers((self.service.handlers(),))
        address = "127.0.0.1:0"
        self.port = (
            self.server.add_secure_port(address, credentials)
            if credentials is not None
            else self.server.add_insecure_port(address)
        )
        self.server.start()

    def stop(self, grace: float | None = None) -> threading.Event:
        event: threading.Event = self.server.stop(grace)
        return event


@pytest.fixture
def server() -> Iterator[GrpcServer]:
    running = GrpcServer()
    yield running
    running.stop()


async def call(
    connection: H2ClientConnection | H2Pool, method: str, message: bytes
) -> tuple[H2Stream, list[bytes]]:
    stream = await connection.request(b"POST", f"/{SERVICE}/{method}".encode(), GRPC_HEADERS)
    await stream.send(grpc_frame(message), end_stream=True)
    head = await stream.response()
    assert (b":status", b"200") in head
    deframer = GrpcDeframer()
    messages = deframer.feed(await stream.read_all())
    assert deframer.pending == 0
    return stream, messages


async def test_unary_call_with_trailers(server):
    connection = await H2ClientConnection.open("127.0.0.1", server.port)
    try:
        stream, messages = await call(connection, "Echo", b"hello")
        assert messages == [b"hello"]
        assert stream.trailer(b"grpc-status") == b"0"
        assert stream.trailer(b"x-echoed") == b"5"
        assert stream.trailers is not None and stream.status == 200
    finally:
        connection.close()


async def test_an_error_surfaces_grpc_status_and_message_from_a_trailers_only_answer(server):
    connection = await H2ClientConnection.open("127.0.0.1", server.port)
    try:
        stream, messages = await call(connection, "Fail", b"order 42")
        assert messages == []
        assert stream.trailer(b"grpc-status") == b"5"  # NOT_FOUND
        assert stream.trailer(b"grpc-message") == b"no such thing: order 42"
        assert await stream.finished() in (stream.trailers, stream.headers)
        # The connection goes on serving after a failed call.
        assert (await call(connection, "Echo", b"again"))[1] == [b"again"]
    finally:
        connection.close()


async def test_server_streaming_in_order(server):
    connection = await H2ClientConnection.open("127.0.0.1", server.port)
    try:
        stream, messages = await call(connection, "Count", b"500")
        assert messages == [b"%d" % i for i in range(500)]
        assert stream.trailer(b"grpc-status") == b"0"
    finally:
        connection.close()


async def test_many_calls_share_one_connection_within_the_servers_stream_limit():
    limited = GrpcServer(**{"grpc.max_concurrent_streams": 4})
    connection = await H2ClientConnection.open("127.0.0.1", limited.port)
    try:
        # Let the server's SETTINGS arrive before the calls pile up.
        await connection.ping()
        refused = 0

        async def call_retrying(message: bytes) -> tuple[H2Stream, list[bytes]]:
            # grpc frees a stream's slot a little after it ended the stream, so a stream
            # opened at once in the freed slot may be REFUSED_STREAM: not processed,
            # retryable (RFC 9113 §8.7), as the proxy will treat it.
            nonlocal refused
            while True:
                try:
                    return await call(connection, "Slow", message)
                except StreamReset as exc:
                    assert exc.retryable, exc
                    refused += 1

        results = await asyncio.gather(*(call_retrying(b"%d" % i) for i in range(24)))
        assert [messages for _, messages in results] == [[b"%d" % i] for i in range(24)]
        assert {stream.trailer(b"grpc-status") for stream, _ in results} == {b"0"}
        assert 1 < limited.service.most_running <= 4
        assert refused < 24
        assert connection.active_streams == 0
    finally:
        connection.close()
        limited.stop()


async def test_a_reader_that_stops_reading_stops_the_server(server):
    window = 64 * 1024
    connection = await H2ClientConnection.open(
        "127.0.0.1", server.port, stream_window=window, connection_window=window
    )
    try:
        stream = await connection.request(b"POST", f"/{SERVICE}/Big".encode(), GRPC_HEADERS)
        await stream.send(grpc_frame(b""), end_stream=True)
        await stream.response()
        await asyncio.sleep(1.0)  # not reading
        held = server.service.big_sent
        # The 64 KiB window plus what grpc buffers on its side: a few messages, not 64.
        assert held < BIG_COUNT // 4, held
        await asyncio.sleep(0.3)
        assert server.service.big_sent == held  # and it stays stopped
        deframer = GrpcDeframer()
        received = 0
        while chunk := await stream.read():
            received += sum(len(m) for m in deframer.feed(chunk))
        assert received == BIG * BIG_COUNT
        assert server.service.big_sent == BIG_COUNT
        assert stream.trailer(b"grpc-status") == b"0"
    finally:
        connection.close()


async def test_unread_answers_given_up_do_not_shut_the_connection_window(server):
    window = 256 * 1024
    connection = await H2ClientConnection.open(
        "127.0.0.1", server.port, stream_window=window, connection_window=window
    )
    try:
        for _ in range(6):  # 6 x 200 KiB received and dropped, far past the 256 KiB window
            stream = await connection.request(b"POST", f"/{SERVICE}/Big".encode(), GRPC_HEADERS)
            await stream.send(grpc_frame(b""), end_stream=True)
            await stream.response()
            for _ in range(50):  # let the window fill
                if sum(size for _, size in stream._buffer) >= 200 * 1024:
                    break
                await asyncio.sleep(0.02)
            stream.reset()
        assert (await call(connection, "Echo", b"window open"))[1] == [b"window open"]
        _, messages = await call(connection, "Count", b"5000")  # more than one window's worth
        assert len(messages) == 5000
    finally:
        connection.close()


async def test_a_large_request_waits_for_the_servers_window(server):
    connection = await H2ClientConnection.open("127.0.0.1", server.port)
    try:
        payload = bytes(range(256)) * (12 * 1024)  # 3 MiB, far past the initial 64 KiB window
        _, messages = await call(connection, "Size", payload)
        assert messages == [str(len(payload)).encode()]
    finally:
        connection.close()


async def test_cancelling_a_stream_tells_the_server_and_keeps_the_connection(server):
    connection = await H2ClientConnection.open("127.0.0.1", server.port)
    try:
        stream = await connection.request(b"POST", f"/{SERVICE}/Forever".encode(), GRPC_HEADERS)
        await stream.send(grpc_frame(b""), end_stream=True)
        assert await stream.read()
        stream.reset()
        assert await asyncio.to_thread(server.service.cancelled.wait, 5)
        assert connection.active_streams == 0
        assert (await call(connection, "Echo", b"still here"))[1] == [b"still here"]
    finally:
        connection.close()


async def test_a_graceful_goaway_lets_calls_in_flight_finish_and_refuses_new_ones(server):
    connection = await H2ClientConnection.open("127.0.0.1", server.port)
    try:
        await call(connection, "Echo", b"before")
        lingering = asyncio.ensure_future(call(connection, "Linger", b"in flight"))
        await asyncio.sleep(0.2)
        server.stop(grace=3.0)
        stream, messages = await lingering  # finished after the GOAWAY
        assert messages == [b"in flight"] and stream.trailer(b"grpc-status") == b"0"
        for _ in range(250):  # the final GOAWAY, once nothing is in flight
            if not connection.available:
                break
            await asyncio.sleep(0.02)
        assert not connection.available
        with pytest.raises(ConnectionClosed) as refused:
            await connection.request(b"POST", f"/{SERVICE}/Echo".encode(), GRPC_HEADERS)
        assert refused.value.retryable
    finally:
        connection.close()


async def test_tls_with_alpn_h2(tmp_path):
    ca = trustme.CA()
    leaf = ca.issue_cert("grpc.internal")
    credentials = grpc.ssl_server_credentials(
        [(leaf.private_key_pem.bytes(), b"".join(b.bytes() for b in leaf.cert_chain_pems))]
    )
    secure = GrpcServer(credentials)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols(["h2"])
    connection = await H2ClientConnection.open(
        "127.0.0.1", secure.port, ssl=context, server_hostname="grpc.internal"
    )
    try:
        assert connection.scheme == b"https"
        stream, messages = await call(connection, "Echo", b"secret")
        assert messages == [b"secret"] and stream.trailer(b"grpc-status") == b"0"
    finally:
        connection.close()
        secure.stop()


async def test_the_pool_reuses_a_connection_and_closes_it_when_idle(server):
    pool = H2Pool("127.0.0.1", server.port, idle_timeout=0.3)
    try:
        results = await asyncio.gather(*(call(pool, "Echo", b"%d" % i) for i in range(20)))
        assert [m for _, m in results] == [[b"%d" % i] for i in range(20)]
        assert pool.opened == 1
        await call(pool, "Echo", b"again")
        assert pool.opened == 1
        await asyncio.sleep(0.6)
        pool.prune()
        assert pool.connections == []
        await call(pool, "Echo", b"after idle")
        assert pool.opened == 2
    finally:
        pool.close()
