"""WebSocket (RFC 6455) on the gateway's own server: handshake and frames, sans-I/O.

The handshake and the incoming frames are handled by the `websockets`
library's `ServerProtocol`; the connection switches with
`Exchange.switch_protocols`, after which every byte the client sends
arrives in `WebSocketEndpoint.write` (the Tunnel protocol). Outgoing frames may
be written by the protocol object (replies, pings, close) or, pre-encoded once
for many clients, straight to the transport: both are whole frames on one
ordered stream.

Outgoing frames wait in the endpoint's own queue (whole frames) while the
transport's buffer is above its high-water mark (the connection's
`write_paused`), not in the transport: so the bytes the transport holds stay
small, and a close frame can still go out ahead of everything queued — a slow
consumer is told 1013 at once instead of after megabytes it will never read.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import struct
import termios
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Origin, Subprotocol

log = structlog.get_logger("potok.websocket")

if TYPE_CHECKING:
    from potok.exchange import Exchange, Responder

# Close codes used by the gateway.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN_LATER = 1013

_SKIPPED_RESPONSE_HEADERS = frozenset({"server"})


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented text frame: what a server sends, encoded once."""
    length = len(payload)
    if length < 126:
        return bytes((0x81, length)) + payload
    if length < 65536:
        return bytes((0x81, 126)) + length.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + length.to_bytes(8, "big") + payload


PING_FRAME = bytes((0x89, 0))


def is_websocket_upgrade(exchange: Exchange) -> bool:
    upgrade = exchange.upgrade
    return upgrade is not None and upgrade.lower() == b"websocket"


def handshake(
    exchange: Exchange,
    *,
    max_size: int,
    origins: Sequence[str] | None = None,
    subprotocols: Sequence[str] | None = None,
) -> tuple[ServerProtocol, list[tuple[bytes, bytes]]] | None:
    """Check a WebSocket handshake. On success: the protocol object (OPEN) and the 101
    headers to pass to `send_switching`; otherwise the refusal has been answered."""
    protocol = ServerProtocol(
        origins=[Origin(o) for o in origins] if origins else None,
        subprotocols=[Subprotocol(s) for s in subprotocols] if subprotocols else None,
        max_size=max_size,
    )
    # The head was parsed by our server; replaying it through the protocol object (its
    # public API) moves it to frame parsing and yields the Request it checks.
    protocol.receive_data(_request_head(exchange))
    events = protocol.events_received()
    request = events[0] if events else None
    if not isinstance(request, Request):
        exchange.problem(400, "bad WebSocket handshake")
        return None
    response = protocol.accept(request)
    if response.status_code != 101:
        detail = response.body.decode("utf-8", "replace").strip() or "bad WebSocket handshake"
        exchange.problem(response.status_code, detail)
        return None
    protocol.send_response(response)
    protocol.data_to_send()  # the 101 goes out through send_switching instead
    switching = [
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in response.headers.raw_items()
        if name.lower() not in _SKIPPED_RESPONSE_HEADERS
    ]
    return protocol, switching


def _request_head(exchange: Exchange) -> bytes:
    lines = [b"GET " + exchange.target + b" HTTP/1.1", b"Host: " + exchange.host]
    lines.append(b"Upgrade: " + (exchange.upgrade or b"websocket"))
    lines.append(b"Connection: Upgrade")
    lines.extend(name + b": " + value for name, value in exchange.headers)
    return b"\r\n".join(lines) + b"\r\n\r\n"


class WebSocketEndpoint:
    """The server end of one WebSocket: override `on_text`, `on_binary`, `on_closed`.

    Fragmented messages are assembled (bounded by the protocol's max_size);
    pings are answered; a close is answered and the TCP connection closed.
    """

    # Unsent bytes (queued here and in the transport) a client may let pile up before
    # `write_frames` says it is a slow consumer.
    send_limit = 1024 * 1024

    def __init__(self, connection: Responder, protocol: ServerProtocol) -> None:
        self.connection = connection
        self.transport = connection.transport
        self._queued: deque[bytes] = deque()
        self._queued_bytes = 0
        self.protocol = protocol
        self.loop = asyncio.get_running_loop()
        self.last_seen = self.loop.time()
        self.closed = False  # the TCP connection is gone
        self.closing = False  # a close frame was sent
        self._fragments: list[bytes] = []
        self._fragment_opcode: Opcode | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self.close_code: int | None = None

    # Tunnel protocol (called by the client connection) --------------------------

    def write(self, data: bytes) -> None:
        self.last_seen = self.loop.time()
        protocol = self.protocol
        protocol.receive_data(data)
        try:
            for frame in protocol.events_received():
                if self.closed:
                    return
                if isinstance(frame, Frame):
                    self._frame(frame)
        except Exception as exc:  # a bug in a handler: close this socket, keep the worker
            log.error("WebSocket handler failed", exc_info=exc)
            self.close_with(CLOSE_INTERNAL, "internal error")
        self.flush()

    def write_eof(self) -> None:
        if not self.closed:
            self.protocol.receive_eof()
            self.flush()
            self.transport.close()

    def close(self) -> None:
        """The TCP connection is gone."""
        if self.closed:
            return
        self.closed = True
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        code = self.close_code
        if code is None and self.protocol.close_rcvd is not None:
            code = self.protocol.close_rcvd.code
        self.on_closed(code if code is not None else 1006)

    def pause_reading(self) -> None:
        """The transport's buffer passed its high-water mark: `write_frames` queues here."""

    def resume_reading(self) -> None:
        """The transport's buffer drained below its low-water mark: send what is queued."""
        queued = self._queued
        if not queued or self.closed:
            return
        data = queued[0] if len(queued) == 1 else b"".join(queued)
        queued.clear()
        self._queued_bytes = 0
        self.transport.write(data)

    # Frames --------------------------------------------------------------------

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._message(opcode, frame.data)
            else:
                self._fragment_opcode = opcode
                self._fragments = [bytes(frame.data)]
        elif opcode is Opcode.CONT:
            self._fragments.append(bytes(frame.data))
            if frame.fin and self._fragment_opcode is not None:
                data = b"".join(self._fragments)
                opcode, self._fragment_opcode, self._fragments = self._fragment_opcode, None, []
                self._message(opcode, data)
        elif opcode is Opcode.CLOSE:
            self.closing = True
            self.on_closing()
        # PING: the protocol queued the PONG; PONG: last_seen is enough.

    def _message(self, opcode: Opcode, data: bytes | bytearray | memoryview) -> None:
        if opcode is Opcode.TEXT:
            text = bytes(data)
            try:
                text.decode()  # RFC 6455 8.1: a text message is UTF-8, or the endpoint fails
            except UnicodeDecodeError:
                self.close_with(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message")
                return
            self.on_text(text)
        else:
            self.on_binary(bytes(data))

    # Hooks ------------------------------------------------------------------------

    def on_text(self, data: bytes) -> None:
        """A complete text message (valid UTF-8: `_message` closed with 1007 otherwise)."""

    def on_binary(self, data: bytes) -> None:
        """A complete binary message."""

    def on_closing(self) -> None:
        """The close handshake started (either side): stop sending new messages."""

    def on_closed(self, code: int) -> None:
        """The TCP connection is gone; `code` is the close code (1006: none received)."""

    # Sending ----------------------------------------------------------------------

    def write_frames(self, data: bytes) -> bool:
        """Write whole frames, in order with everything written before; False once the
        client lets more than `send_limit` bytes wait (a slow consumer: close it 1013)."""
        if self.closed:
            return True
        if not self._queued and not self.connection.write_paused:
            self.transport.write(data)
            return True
        self._queued.append(data)
        self._queued_bytes += len(data)
        return self._queued_bytes + self.transport.get_write_buffer_size() <= self.send_limit

    def flush(self) -> None:
        """Write what the protocol object has queued; close TCP when it says so."""
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.write_frames(chunk)
            elif not self.closed:
                self.resume_reading()  # whatever is queued goes before the FIN
                self.transport.close()  # the server closes TCP first (RFC 6455 7.1.1)

    def send_text(self, payload: bytes) -> None:
        if not self.closing and not self.closed:
            self.write_frames(text_frame(payload))

    def send_ping(self) -> None:
        if not self.closing and not self.closed:
            self.write_frames(PING_FRAME)

    def close_with(self, code: int, reason: str = "", timeout: float = 5.0) -> None:
        """Start the close handshake; drop the connection if the peer does not answer."""
        if self.closed or self.closing:
            return
        self.closing = True
        self.close_code = code
        self.on_closing()
        with contextlib.suppress(InvalidState):
            self.protocol.send_close(code, reason)
        self.flush()
        if not self.closed and self.protocol.state is not State.CLOSED:
            self._close_timer = self.loop.call_later(timeout, self.abort)

    def cut_off(self, code: int, reason: str, timeout: float) -> None:
        """Close a slow consumer: the queued frames are dropped, the close frame goes out
        ahead of them (behind only what the transport and the kernel already hold), and
        the TCP connection is closed once that is written. The connection is dropped only
        when the client stops reading altogether: `timeout` without progress."""
        if self.closed or self.closing:
            return
        self._queued.clear()
        self._queued_bytes = 0
        self.closing = True
        self.close_code = code
        self.on_closing()
        with contextlib.suppress(InvalidState):
            self.protocol.send_close(code, reason)
        for chunk in self.protocol.data_to_send():
            if chunk and not self.closed:
                self.transport.write(chunk)
        if not self.closed:
            self.transport.close()  # flushes the close frame, then FIN
            self._watch_drain(timeout, self._unsent())

    def _watch_drain(self, timeout: float, unsent: int) -> None:
        def check() -> None:
            self._close_timer = None
            if self.closed:
                return
            now = self._unsent()
            if now < unsent:  # still reading: its close frame is coming
                self._watch_drain(timeout, now)
            else:
                self.abort()

        self._close_timer = self.loop.call_later(timeout, check)

    def _unsent(self) -> int:
        """Bytes not yet taken by the client: the transport's, plus the kernel's (Linux)."""
        unsent = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, ValueError):
                raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
                unsent += struct.unpack("i", raw)[0]
        return unsent

    def abort(self) -> None:
        """Drop the TCP connection at once (dead or unresponsive peer)."""
        self._close_timer = None
        if not self.closed:
            self.transport.abort()
