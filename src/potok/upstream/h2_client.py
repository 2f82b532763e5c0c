"""An HTTP/2 client for upstreams (gRPC and h2 services), on asyncio protocols and `h2`.

Used by the gRPC routes (potok/grpc/call.py) towards their upstreams. What it gives,
on one TCP (or TLS, ALPN h2) connection:

- multiplexed streams, as many at once as the server's SETTINGS_MAX_CONCURRENT_STREAMS
  allows (`request` waits for a free slot), so one connection carries many calls;
- flow control both ways, tied to back-pressure: `H2Stream.send` waits while the peer's
  window (stream or connection) is shut, and while the socket's buffer is full; received
  DATA is acknowledged (WINDOW_UPDATE) only when the caller `read`s it, so a reader that
  stops reading stops the server once the window it was given (`stream_window`) is full;
- response trailers (`grpc-status`, `grpc-message`), also from a trailers-only response;
- GOAWAY: streams the server never processed fail as `retryable`, the others finish;
  no new stream is started on the connection;
- `H2Pool`: keep-alive connections to one target, reused while they have stream slots,
  closed after `idle_timeout` without streams.

Headers are bytes throughout (no encoding per request); pseudo-headers are built by
`request`.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
import hyperframe.frame

Headers = list[tuple[bytes, bytes]]

DEFAULT_STREAM_WINDOW = 1 << 20  # per stream: what a reader that stops reading lets through
DEFAULT_CONNECTION_WINDOW = 1 << 24  # all streams together
_SMALLEST_WINDOW = 65_535  # RFC 9113's initial window, before any SETTINGS


class H2Error(Exception):
    """A stream or the connection failed. `retryable`: the server did not process the
    request (GOAWAY past it, REFUSED_STREAM), so it may be sent again elsewhere."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class StreamReset(H2Error):
    """The server reset the stream (RST_STREAM) with `code`."""

    def __init__(self, code: int) -> None:
        name = _error_name(code)
        super().__init__(
            f"stream reset by the server: {name}",
            retryable=code == h2.errors.ErrorCodes.REFUSED_STREAM,
        )
        self.code = code


class ConnectionClosed(H2Error):
    """The connection ended (GOAWAY, closed, or a protocol error) before the stream did."""


def _error_name(code: int) -> str:
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return f"error {code:#x}"


class _GracefulH2Connection(h2.connection.H2Connection):
    """h2 takes any GOAWAY as the end of the connection: every frame after it (the DATA
    of streams the server still finishes, the PING grpc sends while draining) would be
    a protocol error. RFC 9113 §6.8 says a graceful GOAWAY (NO_ERROR) lets the streams
    up to its last stream id complete, so after one the connection stays open for
    them; `H2ClientConnection` starts no new stream on it."""

    def _receive_goaway_frame(
        self, frame: hyperframe.frame.GoAwayFrame
    ) -> tuple[list[hyperframe.frame.Frame], list[h2.events.Event]]:
        frames, events = super()._receive_goaway_frame(frame)
        if frame.error_code == h2.errors.ErrorCodes.NO_ERROR:
            self.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        return frames, events


class _PlainEncoder(hpack.Encoder):
    """HPACK without Huffman coding: hpack's Huffman coder is pure Python, and what it
    would save on a call's head is a few dozen bytes."""

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        return super().encode(headers, huffman=False)


class H2Stream:
    """One request/response exchange on an `H2ClientConnection`."""

    __slots__ = (
        "_buffer",
        "_changed",
        "_connection",
        "_error",
        "_pending_ack",
        "_remote_ended",
        "headers",
        "id",
        "trailers",
    )

    def __init__(self, connection: H2ClientConnection, stream_id: int) -> None:
        self._connection = connection
        self.id = stream_id
        self.headers: Headers | None = None  # the final (non-1xx) response head
        self.trailers: Headers | None = None
        # Received DATA not read yet, with each chunk's flow-controlled size (padding too).
        self._buffer: deque[tuple[bytes, int]] = deque()
        self._pending_ack = 0
        self._remote_ended = False
        self._error: H2Error | None = None
        self._changed = asyncio.Event()

    # Reading the response ---------------------------------------------------------

    @property
    def status(self) -> int | None:
        if self.headers is None:
            return None
        for name, value in self.headers:
            if name == b":status":
                return int(value)
        return None

    @property
    def ended(self) -> bool:
        """The server ended the stream and every byte of it has been read."""
        return self._remote_ended and not self._buffer

    async def response(self) -> Headers:
        """The response head (waits for it)."""
        while self.headers is None:
            self._raise_error()
            await self._wait()
        return self.headers

    async def read(self) -> bytes:
        """The next piece of the body; b"" once the server ended the stream.

        Reading is what opens the window again: bytes are acknowledged to the server as
        they are handed out here, never on arrival.
        """
        while not self._buffer:
            if self._remote_ended:
                return b""
            self._raise_error()
            await self._wait()
        data, flow_size = self._buffer.popleft()
        self._connection.acknowledge(self.id, flow_size)
        return data

    async def read_all(self) -> bytes:
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return b"".join(parts)

    async def finished(self) -> Headers:
        """Wait for the end of the stream (the body drained unread) and return the trailers,
        or, for a trailers-only response (gRPC errors), the response head."""
        while await self.read():
            pass
        return self.trailers if self.trailers is not None else (self.headers or [])

    def trailer(self, name: bytes) -> bytes | None:
        """A trailer's value; a trailers-only response's head counts as its trailers."""
        for block in (self.trailers, self.headers if self.trailers is None else None):
            for key, value in block or ():
                if key == name:
                    return value
        return None

    # Sending the request body --------------------------------------------------------

    async def send(self, data: bytes, *, end_stream: bool = False) -> None:
        """Send body bytes, waiting while the server's flow-control window is shut (and
        while the socket's buffer is full)."""
        connection = self._connection
        view = memoryview(data)
        while view:
            self._raise_error()
            size = await connection.wait_for_window(self)
            chunk, view = view[:size], view[size:]
            connection.send_data(self.id, bytes(chunk), end_stream=end_stream and not view)
        if end_stream and not data:
            connection.send_data(self.id, b"", end_stream=True)

    async def end(self, trailers: Headers | None = None) -> None:
        """End the request body, with trailers if given."""
        self._raise_error()
        if trailers:
            self._connection.send_trailers(self.id, trailers)
        else:
            self._connection.send_data(self.id, b"", end_stream=True)

    def reset(self, code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        """Give up on the stream (RST_STREAM): a caller that left, a deadline that passed.
        Also what to call on a stream whose body will not be read to its end, or whose
        request will not be sent to its end after the server ended its side (RFC 9113
        §8.1: else the stream stays half-closed and holds one of the server's slots)."""
        if self._error is None:
            self._connection.reset_stream(self.id, code)
        # Bytes received but never to be read still count against the connection's
        # window: give them back, or the connection would slowly shut for every stream.
        unread = sum(size for _, size in self._buffer)
        self._buffer.clear()
        self._connection.acknowledge(self.id, unread)
        self._fail(H2Error("stream cancelled by the client"))

    # Told by the connection ----------------------------------------------------------

    def _wake(self) -> None:
        self._changed.set()

    def _fail(self, error: H2Error) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    async def _wait(self) -> None:
        await self._changed.wait()
        self._changed.clear()


class H2ClientConnection(asyncio.Protocol):
    """One HTTP/2 connection to a server, carrying many `H2Stream`s at once."""

    def __init__(
        self,
        *,
        authority: bytes,
        scheme: bytes,
        stream_window: int = DEFAULT_STREAM_WINDOW,
        connection_window: int = DEFAULT_CONNECTION_WINDOW,
    ) -> None:
        self.authority = authority
        self.scheme = scheme
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            # The request heads are built by the gateway from fields the server side has
            # validated already (lower-case names, no connection-specific fields): h2's
            # checks would be a Python loop over every character of every call.
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self._h2 = _GracefulH2Connection(config=config)
        self._h2.encoder = _PlainEncoder()
        self._stream_window = stream_window
        self._connection_window = connection_window
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, H2Stream] = {}
        self._write_paused = False
        self._flush_scheduled = False
        self._changed = asyncio.Event()  # windows, slots, writability, settings moved
        self._pings: dict[bytes, asyncio.Future[float]] = {}
        self._goaway_last_id: int | None = None
        self.closed = False
        self.draining = False  # retired: no new streams, closed once the last one ends
        self.error: H2Error | None = None
        self.idle_since = time.monotonic()

    # Opening ------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        connect_timeout: float = 5.0,
        stream_window: int = DEFAULT_STREAM_WINDOW,
        connection_window: int = DEFAULT_CONNECTION_WINDOW,
    ) -> H2ClientConnection:
        """Connect (TLS with ALPN h2 if `ssl` is given, else h2c with prior knowledge)
        and send the connection preface. The SSLContext must offer ALPN "h2"."""
        authority = (host if ":" not in host else f"[{host}]") + f":{port}"
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(connect_timeout):
            transport, connection = await loop.create_connection(
                lambda: cls(
                    authority=authority.encode(),
                    scheme=b"https" if ssl is not None else b"http",
                    stream_window=stream_window,
                    connection_window=connection_window,
                ),
                host,
                port,
                ssl=ssl,
                server_hostname=(server_hostname or host) if ssl is not None else None,
                ssl_handshake_timeout=connect_timeout if ssl is not None else None,
            )
        if ssl is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            protocol = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
            if protocol != "h2":
                transport.close()
                raise ConnectionClosed(f"the server did not agree to HTTP/2 (ALPN: {protocol})")
        return connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's are not subclasses
        h2conn = self._h2
        h2conn.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self._stream_window,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 64 * 1024,
            },
        )
        h2conn.initiate_connection()
        if self._connection_window > _SMALLEST_WINDOW:
            h2conn.increment_flow_control_window(self._connection_window - _SMALLEST_WINDOW)
        self._flush()

    # Streams ------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """Whether a new stream may start here (open, no GOAWAY)."""
        return (
            not self.closed
            and self._goaway_last_id is None
            and self.error is None
            and not self.draining
        )

    @property
    def active_streams(self) -> int:
        return len(self._streams)

    @property
    def has_free_slot(self) -> bool:
        limit = self._h2.remote_settings.max_concurrent_streams
        return self._h2.open_outbound_streams < limit

    async def request(
        self,
        method: bytes,
        path: bytes,
        headers: Iterable[tuple[bytes, bytes]] = (),
        *,
        end_stream: bool = False,
        authority: bytes | None = None,
    ) -> H2Stream:
        """Start a stream with the request head (waits for a stream slot). With
        `end_stream`, the request has no body; otherwise send it with `H2Stream.send`."""
        while True:
            if not self.available:
                # Nothing was sent: the request may go on another connection.
                reason = self.error or "the server is going away (GOAWAY)"
                raise ConnectionClosed(f"no new stream here: {reason}", retryable=True)
            if self.has_free_slot:
                break
            await self._wait()
        stream_id = self._h2.get_next_available_stream_id()
        head: Headers = [
            (b":method", method),
            (b":scheme", self.scheme),
            (b":authority", authority or self.authority),
            (b":path", path),
            *headers,
        ]
        stream = H2Stream(self, stream_id)
        self._streams[stream_id] = stream
        self._h2.send_headers(stream_id, head, end_stream=end_stream)
        self._flush()
        return stream

    async def ping(self) -> float:
        """Round-trip time of a PING: is the connection alive?"""
        self._raise_if_broken()
        opaque = time.perf_counter_ns().to_bytes(8, "big")
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pings[opaque] = waiter
        started = time.perf_counter()
        self._h2.ping(opaque)
        self._flush()
        await waiter
        return time.perf_counter() - started

    def close(self, code: int = h2.errors.ErrorCodes.NO_ERROR) -> None:
        """GOAWAY and close; streams still open fail."""
        if self.closed:
            return
        try:
            self._h2.close_connection(error_code=code)
            self._flush_now()
        except h2.exceptions.ProtocolError:
            pass
        self._terminate(ConnectionClosed("connection closed by the client"))
        if self._transport is not None:
            self._transport.close()

    # Used by H2Stream ---------------------------------------------------------------

    async def wait_for_window(self, stream: H2Stream) -> int:
        """How many bytes `stream` may send now (> 0), waiting until it is some."""
        while True:
            stream._raise_error()
            self._raise_if_broken()
            if not self._write_paused:
                try:
                    window = self._h2.local_flow_control_window(stream.id)
                except h2.exceptions.StreamClosedError:
                    raise H2Error("the stream is closed for sending") from None
                if window > 0:
                    return min(window, self._h2.max_outbound_frame_size)
            await self._wait()

    def send_data(self, stream_id: int, data: bytes, *, end_stream: bool) -> None:
        try:
            self._h2.send_data(stream_id, data, end_stream=end_stream)
        except h2.exceptions.StreamClosedError:
            raise H2Error("the stream is closed for sending") from None
        self._flush()

    def send_trailers(self, stream_id: int, trailers: Headers) -> None:
        self._h2.send_headers(stream_id, trailers, end_stream=True)
        self._flush()

    def reset_stream(self, stream_id: int, code: int) -> None:
        self._streams.pop(stream_id, None)
        if self.closed:
            return
        try:
            self._h2.reset_stream(stream_id, code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.NoSuchStreamError):
            return  # closed on both sides already
        self._flush()
        self._idle_check()

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Bytes the reader took: h2 decides when a WINDOW_UPDATE is worth sending."""
        if size and not self.closed:
            self._h2.acknowledge_received_data(size, stream_id)
            self._flush()

    # asyncio.Protocol -----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._flush_now()  # h2 queued a GOAWAY for the server
            self._terminate(ConnectionClosed(f"HTTP/2 protocol error from the server: {exc}"))
            if self._transport is not None:
                self._transport.close()
            return
        for event in events:
            self._handle(event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._terminate(
            ConnectionClosed(
                "connection closed by the server" if exc is None else f"connection lost: {exc}"
            )
        )

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_all()

    # Events ---------------------------------------------------------------------------

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            stream = self._streams.get(event.stream_id)
            if stream is None:  # reset by us meanwhile: give the connection window back
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                return
            stream._buffer.append((event.data, event.flow_controlled_length))
            stream._wake()
        elif isinstance(event, h2.events.ResponseReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.headers = list(event.headers)
                stream._wake()
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.trailers = list(event.headers)
                stream._wake()
        elif isinstance(event, h2.events.StreamEnded):
            stream = self._streams.pop(event.stream_id, None)
            if stream is not None:
                stream._remote_ended = True
                stream._wake()
            self._changed.set()  # a slot is free (for `request` and `wait_for_window`)
            self._idle_check()
        elif isinstance(event, h2.events.StreamReset):
            stream = self._streams.pop(event.stream_id, None)
            if stream is not None:
                stream._fail(StreamReset(event.error_code))
            self._changed.set()
            self._idle_check()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            # Senders wait on the connection (`wait_for_window`), readers on their stream.
            self._changed.set()
        elif isinstance(event, h2.events.PingAckReceived):
            waiter = self._pings.pop(event.ping_data, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(0.0)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._goaway(event.error_code, event.last_stream_id)
        # InformationalResponseReceived (1xx), SettingsAcknowledged, PingReceived (h2
        # answers it), PriorityUpdated: nothing to do.

    def _goaway(self, code: int | None, last_stream_id: int | None) -> None:
        last = last_stream_id if last_stream_id is not None else 0
        self._goaway_last_id = last
        graceful = code in (None, h2.errors.ErrorCodes.NO_ERROR)
        for stream_id, stream in list(self._streams.items()):
            if stream_id > last:
                # Never processed (RFC 9113 §6.8): safe to send again elsewhere.
                self._streams.pop(stream_id)
                stream._fail(ConnectionClosed("GOAWAY before the server took it", retryable=True))
            elif not graceful:
                self._streams.pop(stream_id)
                stream._fail(ConnectionClosed(f"GOAWAY from the server: {_error_name(code or 0)}"))
        if not graceful:
            self.error = ConnectionClosed(f"GOAWAY from the server: {_error_name(code or 0)}")
        self._wake_all()
        if not self._streams and self._transport is not None:
            self._transport.close()

    # Plumbing -------------------------------------------------------------------------

    def _flush(self) -> None:
        """Write what h2 has queued, once per loop iteration: the HEADERS, DATA and
        WINDOW_UPDATEs of every stream that moved in this iteration share one write
        (one syscall, not one per frame)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_scheduled = False
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _terminate(self, error: H2Error) -> None:
        if self.closed:
            return
        self.closed = True
        if self.error is None:
            self.error = error
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            stream._fail(error)
        for waiter in self._pings.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._pings.clear()
        self._wake_all()

    def _raise_if_broken(self) -> None:
        if self.error is not None:
            raise self.error
        if self.closed:
            raise ConnectionClosed("the connection is closed")

    def _idle_check(self) -> None:
        if not self._streams:
            self.idle_since = time.monotonic()
            if (self._goaway_last_id is not None or self.draining) and self._transport is not None:
                self._transport.close()

    def _wake_all(self) -> None:
        self._changed.set()
        for stream in self._streams.values():
            stream._wake()

    async def _wait(self) -> None:
        await self._changed.wait()
        self._changed.clear()


class H2Pool:
    """Keep-alive HTTP/2 connections to one target, shared by many concurrent calls.

    A call takes a connection that is available and has a stream slot free; a new one
    is opened only when none has (so one connection serves until the server's
    SETTINGS_MAX_CONCURRENT_STREAMS is reached). Connections without streams for
    `idle_timeout` are closed by `prune` (or on the next `connection`).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        connect_timeout: float = 5.0,
        idle_timeout: float = 60.0,
        max_connections: int = 16,
        stream_window: int = DEFAULT_STREAM_WINDOW,
        connect_timer: Callable[[str, float], None] | None = None,
    ) -> None:
        self.host = host
        # Told (phase, seconds) of each new connection: "tcp" for h2c, "tcp_tls" for TLS
        # (one step here: the preface follows the handshake at once).
        self._connect_timer = connect_timer
        self.port = port
        self._ssl = ssl
        self._server_hostname = server_hostname
        self._connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._stream_window = stream_window
        self.connections: list[H2ClientConnection] = []
        self._opening: asyncio.Task[H2ClientConnection] | None = None
        self.opened = 0

    async def connection(self) -> H2ClientConnection:
        """A connection with a free stream slot (opened if needed)."""
        self.prune()
        while True:
            for connection in self.connections:
                if connection.available and connection.has_free_slot:
                    return connection
            if self._opening is None:
                usable = [c for c in self.connections if c.available]
                if usable and len(self.connections) >= self.max_connections:
                    # All full: the least busy one queues the stream for a slot.
                    return min(usable, key=lambda c: c.active_streams)
                self._opening = asyncio.get_running_loop().create_task(self._open())
            opening = self._opening
            try:
                # Calls that arrive while a connection is opening share it.
                await asyncio.shield(opening)
            finally:
                if self._opening is opening and opening.done():
                    self._opening = None

    async def request(
        self,
        method: bytes,
        path: bytes,
        headers: Iterable[tuple[bytes, bytes]] = (),
        *,
        end_stream: bool = False,
        authority: bytes | None = None,
    ) -> H2Stream:
        """Start a stream on a pooled connection; once more on another connection if the
        chosen one turned out to be going away."""
        for attempt in range(2):
            connection = await self.connection()
            try:
                return await connection.request(
                    method, path, headers, end_stream=end_stream, authority=authority
                )
            except ConnectionClosed as exc:
                if not exc.retryable or attempt:
                    raise
        raise AssertionError("unreachable")

    async def _open(self) -> H2ClientConnection:
        started = time.perf_counter()
        connection = await H2ClientConnection.open(
            self.host,
            self.port,
            ssl=self._ssl,
            server_hostname=self._server_hostname,
            connect_timeout=self._connect_timeout,
            stream_window=self._stream_window,
        )
        if self._connect_timer is not None:
            phase = "tcp" if self._ssl is None else "tcp_tls"
            self._connect_timer(phase, time.perf_counter() - started)
        self.connections.append(connection)
        self.opened += 1
        return connection

    def prune(self) -> None:
        """Drop closed connections; close those without streams that are idle past the
        timeout or going away (one going away with streams is kept until they end)."""
        now = time.monotonic()
        kept = []
        for connection in self.connections:
            if connection.closed:
                continue
            if connection.active_streams == 0 and (
                not connection.available or now - connection.idle_since > self.idle_timeout
            ):
                connection.close()
                continue
            kept.append(connection)
        self.connections = kept

    def close(self) -> None:
        for connection in self.connections:
            connection.close()
        self.connections = []

    def retire(self) -> None:
        """No new streams here: idle connections close now, busy ones when their last
        stream ends (a config reload replaced the service; calls in flight finish)."""
        for connection in self.connections:
            if connection.active_streams:
                connection.draining = True
            else:
                connection.close()
        self.connections = []


# gRPC message framing (the body of a gRPC call over HTTP/2) ------------------------------


def grpc_frame(message: bytes, *, compressed: bool = False) -> bytes:
    """One length-prefixed gRPC message: flag byte, 4-byte big-endian length, bytes."""
    return (b"\x01" if compressed else b"\x00") + len(message).to_bytes(4, "big") + message


class GrpcDeframer:
    """Splits a gRPC body, fed in any pieces, into its messages (payload bytes)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        messages = []
        while len(buffer) >= 5:
            length = int.from_bytes(buffer[1:5], "big")
            if len(buffer) < 5 + length:
                break
            messages.append(bytes(buffer[5 : 5 + length]))
            del buffer[: 5 + length]
        return messages

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message (non-zero at the end of a body: truncated)."""
        return len(self._buffer)
