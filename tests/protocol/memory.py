"""In-memory transports for driving the gateway's protocols without sockets (uvicorn-style).

`FakeTransport` stands where asyncio's socket transport would: it records what the
protocol writes and how it steers reading, and its `send`/`reset`/`eof` play the peer.
Like a real transport, `close` and `abort` report `connection_lost` on the next loop turn.
`MemoryNetwork` replaces the loop's `create_connection`, so a `ProxyCall` "connects" to a
fake upstream whose side the test plays.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httptools

from potok.app import Gateway
from potok.config.models import GatewayConfig
from potok.exchange import Exchange, ResponseHook
from potok.http.settings import ServerSettings
from potok.observability.metrics import GatewayMetrics, MetricsRegistry
from potok.runtime import Runtime
from potok.server.connection import ClientConnection
from potok.server.state import ServerState

CLIENT_PEER = ("203.0.113.7", 50123)
GATEWAY_ADDRESS = ("127.0.0.1", 8080)


class FakeTransport(asyncio.Transport):
    """One end of an in-memory connection; the test plays the other end."""

    def __init__(
        self,
        protocol: asyncio.Protocol,
        peer: tuple[str, int] = CLIENT_PEER,
        sock: tuple[str, int] = GATEWAY_ADDRESS,
    ) -> None:
        super().__init__()
        self.protocol = protocol
        self.loop = asyncio.get_running_loop()
        self.written: list[bytes] = []
        self.written_after_close: list[bytes] = []
        self.reading = True
        self.reading_calls: list[str] = []  # "pause" / "resume", as the protocol called them
        self.closing = False
        self.aborted = False
        self.lost = False
        self.eof_written = False
        self._extra: dict[str, Any] = {"peername": peer, "sockname": sock}

    # asyncio.Transport, as the protocol uses it ------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        (self.written_after_close if self.closing else self.written).append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def pause_reading(self) -> None:
        self.reading_calls.append("pause")
        self.reading = False

    def resume_reading(self) -> None:
        self.reading_calls.append("resume")
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.loop.call_soon(self._lose, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def get_write_buffer_size(self) -> int:
        return 0

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol

    def _lose(self, exc: Exception | None) -> None:
        if not self.lost:
            self.lost = True
            self.protocol.connection_lost(exc)

    # The peer's side ---------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Bytes from the peer. A paused transport delivers nothing: neither does this."""
        assert self.reading, "data delivered to a protocol that paused reading"
        assert not self.lost, "data delivered after connection_lost"
        self.protocol.data_received(data)

    def send_bytewise(self, data: bytes) -> None:
        for i in range(len(data)):
            self.send(data[i : i + 1])

    def eof(self) -> None:
        """The peer shut down its sending side."""
        if not self.protocol.eof_received():
            self.close()

    def reset(self, exc: Exception | None = None) -> None:
        """The peer went away (RST, or a clean close with `exc` None)."""
        self.closing = True
        self._lose(exc)

    def take(self) -> bytes:
        """Everything written since the last take."""
        data = b"".join(self.written)
        self.written.clear()
        return data

    def fill(self) -> None:
        """The kernel buffer toward the peer is full: the transport asks to stop writing."""
        self.protocol.pause_writing()

    def drain(self) -> None:
        self.protocol.resume_writing()


class MemoryNetwork:
    """Stands in for the loop's `create_connection`: each connect makes a FakeTransport."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[FakeTransport] = asyncio.Queue()
        self.connects = 0
        self.refused: set[tuple[str, int]] = set()
        self._port = 40000

    def install(self, loop: asyncio.AbstractEventLoop, monkeypatch: Any) -> None:
        monkeypatch.setattr(loop, "create_connection", self.create_connection)

    async def create_connection(
        self, protocol_factory: Callable[[], asyncio.Protocol], host: str, port: int, **_: Any
    ) -> tuple[FakeTransport, asyncio.Protocol]:
        self.connects += 1
        if (host, port) in self.refused:
            raise ConnectionRefusedError(111, "Connection refused")
        protocol = protocol_factory()
        self._port += 1
        transport = FakeTransport(protocol, peer=(host, port), sock=("127.0.0.1", self._port))
        protocol.connection_made(transport)
        self.connections.put_nowait(transport)
        return transport, protocol

    async def accept(self) -> FakeTransport:
        """The next upstream connection the gateway opens (it opens them in a task)."""
        async with asyncio.timeout(2.0):
            return await self.connections.get()


# Handlers ---------------------------------------------------------------------------


class RecordingHandler:
    """A RequestHandler that keeps each request for the test to answer."""

    def __init__(self) -> None:
        self.handled: list[Exchange] = []
        self.finished_exchanges: list[Exchange] = []
        self.fail_with: Exception | None = None

    def handle(self, exchange: Exchange) -> None:
        self.handled.append(exchange)
        if self.fail_with is not None:
            raise self.fail_with

    def finished(self, exchange: Exchange) -> None:
        self.finished_exchanges.append(exchange)

    @property
    def answer_hooks(self) -> tuple[ResponseHook, ...]:
        return ()


def server_state(handler: Any, settings: ServerSettings | None = None) -> ServerState:
    return ServerState(handler, settings or ServerSettings())


def connect_client(state: ServerState, peer: tuple[str, int] = CLIENT_PEER) -> FakeTransport:
    """A client connection accepted by the gateway; the test plays the client."""
    protocol = ClientConnection(state)
    transport = FakeTransport(protocol, peer=peer)
    protocol.connection_made(transport)
    return transport


def memory_gateway(config: dict[str, Any]) -> tuple[ServerState, Gateway]:
    """The real Runtime and Gateway for `config`, as process/worker.py wires them (no own API)."""
    runtime = Runtime(GatewayConfig.model_validate(config))
    gateway = Gateway(runtime, GatewayMetrics(MetricsRegistry("0")), None)
    return ServerState(gateway, runtime.settings), gateway


async def settle(turns: int = 5) -> None:
    """Let callbacks scheduled with call_soon (connection_lost, tasks' steps) run."""
    for _ in range(turns):
        await asyncio.sleep(0)


# Reading what was written -------------------------------------------------------------


@dataclass
class Response:
    status: int = 0
    reason: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False

    def header(self, name: str) -> bytes | None:
        wanted = name.lower().encode()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def header_count(self, name: str) -> int:
        wanted = name.lower().encode()
        return sum(1 for key, _ in self.headers if key.lower() == wanted)


class _Collector:
    def __init__(self) -> None:
        self.responses: list[Response] = []
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.responses.append(Response())

    def on_status(self, reason: bytes) -> None:
        self.responses[-1].reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.responses[-1].headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.responses[-1].status = self.parser.get_status_code()

    def on_body(self, data: bytes) -> None:
        self.responses[-1].body += data

    def on_message_complete(self) -> None:
        self.responses[-1].complete = True


def read_responses(data: bytes) -> list[Response]:
    """Parse what a gateway wrote to a client: every response, the last maybe incomplete."""
    collector = _Collector()
    collector.parser.feed_data(data)
    return collector.responses


def read_response(data: bytes) -> Response:
    responses = read_responses(data)
    assert len(responses) == 1, f"expected one response, got {len(responses)}: {data!r}"
    return responses[0]
