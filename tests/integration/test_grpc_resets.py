"""Upstream stream resets through a gRPC route, from a raw HTTP/2 server (grpcio never
sends RST_STREAM for its own errors): a reset before the answer becomes a gRPC status
for the client (INTERNAL_ERROR -> INTERNAL), one after it is relayed as a reset with
the same code (ENHANCE_YOUR_CALM, which grpcio reads as RESOURCE_EXHAUSTED)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
from h2.errors import ErrorCodes

from tests.support.gateway import GatewayProcess
from tests.support.net import request

OPTIONS = [("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0)]


class ResettingServer(asyncio.Protocol):
    """h2c: /r.S/Before is reset at once; /r.S/After answers a head and one message,
    then resets; /r.S/Refused is refused (REFUSED_STREAM) every other time, and
    answered OK the others."""

    refusals = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.conn.initiate_connection()
        self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                path = dict(event.headers)[b":path"]
                stream = event.stream_id
                if path.endswith(b"/Before"):
                    self.conn.reset_stream(stream, ErrorCodes.INTERNAL_ERROR)
                elif path.endswith(b"/Refused"):
                    ResettingServer.refusals += 1
                    if ResettingServer.refusals % 2:
                        self.conn.reset_stream(stream, ErrorCodes.REFUSED_STREAM)
                    else:
                        head = [(b":status", b"200"), (b"content-type", b"application/grpc")]
                        self.conn.send_headers(stream, head)
                        self.conn.send_data(stream, b"\0\0\0\0\x02ok")
                        self.conn.send_headers(stream, [(b"grpc-status", b"0")], end_stream=True)
                else:
                    head = [(b":status", b"200"), (b"content-type", b"application/grpc")]
                    self.conn.send_headers(stream, head)
                    self.conn.send_data(stream, b"\0\0\0\0\x03one")
                    asyncio.get_running_loop().call_later(0.1, self._reset, stream)
            elif isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        self.transport.write(self.conn.data_to_send())

    def _reset(self, stream: int) -> None:
        self.conn.reset_stream(stream, ErrorCodes.ENHANCE_YOUR_CALM)
        self.transport.write(self.conn.data_to_send())


@pytest.fixture(scope="module")
def upstream_port() -> Iterator[int]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def start() -> None:
        server = await loop.create_server(ResettingServer, "127.0.0.1", 0)
        holder["server"] = server
        holder["port"] = server.sockets[0].getsockname()[1]
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop)
    assert ready.wait(5)
    yield int(holder["port"])  # type: ignore[call-overload]
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.fixture(scope="module")
def gateway(upstream_port: int) -> Iterator[GatewayProcess]:
    process = GatewayProcess(
        {
            "services": {
                "r": {
                    "targets": [f"http://127.0.0.1:{upstream_port}"],
                    "circuit_breaker": None,
                    "passive_ejection": None,
                    "retry": {"attempts": 2, "backoff": {"initial": "1ms", "max": "2ms"}},
                }
            },
            "routes": [{"name": "r", "match": {"prefix": "/r.S/"}, "service": "r", "grpc": True}],
        }
    )
    yield process
    process.stop()


def test_a_reset_before_the_answer_is_a_grpc_status(gateway):
    with (
        grpc.insecure_channel(f"127.0.0.1:{gateway.port}", options=OPTIONS) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        channel.unary_unary("/r.S/Before")(b"x", timeout=10)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "INTERNAL_ERROR" in caught.value.details()


def test_a_reset_after_the_answer_started_is_relayed_with_its_code(gateway):
    received = []
    with (
        grpc.insecure_channel(f"127.0.0.1:{gateway.port}", options=OPTIONS) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        for message in channel.unary_stream("/r.S/After")(b"x", timeout=10):
            received.append(message)
    assert received == [b"one"]
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_refused_stream_goes_again_and_the_call_succeeds(gateway):
    with grpc.insecure_channel(f"127.0.0.1:{gateway.port}", options=OPTIONS) as channel:
        for _ in range(3):
            assert channel.unary_unary("/r.S/Refused")(b"x", timeout=10) == b"ok"
    scrape = request(gateway.port, "GET", "/api/v1/metrics").body.decode()
    assert 'upstream_retries_total{reason="reset",service="r"} 3.0' in scrape
