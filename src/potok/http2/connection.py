"""One HTTP/2 client connection (RFC 9113) on the h2 state machine.

h2 does the framing, HPACK and flow-control accounting; this protocol turns its events
into streams (`Http2Stream`, each the responder of one exchange on the route's usual
pipeline) and holds the connection to its limits:

- new streams are started after the whole read is processed (like the HTTP/1.1 parser's
  dispatch after `feed_data`), so a request whose END_STREAM came in the same read is
  seen complete and goes upstream with a Content-Length-less empty body, not chunked;
- the request-side connection window is `max_concurrent_streams` stream windows, so
  streams whose consumers pause (and hold their acknowledgements) cannot starve others;
- floods (RST_STREAM, SETTINGS, PING, empty DATA) are counted per window and answered
  with GOAWAY ENHANCE_YOUR_CALM; header blocks are bounded across CONTINUATION frames
  (limits.py) and decoded header lists by HPACK (SETTINGS_MAX_HEADER_LIST_SIZE);
- while the socket's write buffer is past `_CONTROL_BACKLOG` (a client that sends
  frames needing answers and reads none), reading from it stops;
- the sweeper (server/state.py) closes an idle connection after the keep-alive timeout
  and resets streams stalled on a closed window past `stall_timeout`;
- draining (shutdown, `close_if_idle`) sends GOAWAY(NO_ERROR) with the last stream it
  took, finishes the open streams and refuses new ones (REFUSED_STREAM, safe to retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings
from hpack import Encoder
from hyperframe.frame import GoAwayFrame

from potok.http2.headers import Malformed, Refused, apply_request_headers, header_kinds
from potok.http2.limits import BoundedFrameBuffer, FloodBudget
from potok.http2.stream import Http2Stream
from potok.observability.client_log import ThrottledClientLog
from potok.observability.request_id import accept_request_id, new_request_id
from potok.server.state import IDLE

if TYPE_CHECKING:
    from potok.http.settings import Http2Settings
    from potok.server.state import ServerState
    from potok.tls.session import TlsInfo

log = structlog.get_logger("potok.http2")
_closed_log = ThrottledClientLog(log, "http2 connection closed")
_stream_log = ThrottledClientLog(log, "http2 stream refused")

# Bytes the socket may hold unsent before the connection stops reading the client: only
# answers to its own control frames can grow it this far (responses wait for windows).
_CONTROL_BACKLOG = 1024 * 1024
_MAX_WINDOW = 2**31 - 1
_DEFAULT_WINDOW = 65_535


class _PlainEncoder(Encoder):
    """HPACK without Huffman coding for the responses: hpack's Huffman coder is pure
    Python, the largest single cost of a response head after the table search; the
    literals it would shorten (dates, request ids) are a few dozen bytes each."""

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        return super().encode(headers, huffman=False)


class Http2Connection(asyncio.Protocol):
    """The server side of one HTTP/2 connection; its streams are the exchanges' responders."""

    def __init__(
        self,
        state: ServerState,
        settings: Http2Settings,
        peer_ip: str,
        tls: TlsInfo | None = None,
    ) -> None:
        self.state = state
        self.tls = tls
        self.settings = settings
        self.loop = state.loop
        self.peer_ip = peer_ip
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.streams: dict[int, Http2Stream] = {}
        self.write_paused = False
        self.phase = IDLE  # never BUSY: the sweeper looks at every HTTP/2 connection's deadline
        self.deadline = state.loop_time() + state.settings.keepalive_timeout
        self._closed = False
        self._draining = False  # GOAWAY(NO_ERROR) sent: no new streams
        self._reading_paused = False
        self._write_paused_since = 0.0
        self._starting: list[Http2Stream] = []
        self._flush_scheduled = False
        self._kinds = header_kinds(state.settings.dropped_headers)
        clock = state.loop_time
        window = settings.flood_window
        self._resets = FloodBudget(settings.max_resets, window, clock)
        self._settings_frames = FloodBudget(settings.max_settings, window, clock)
        self._pings = FloodBudget(settings.max_pings, window, clock)
        self._empty_data = FloodBudget(settings.max_empty_data, window, clock)
        self.h2 = self._state_machine(settings)
        self._handlers: dict[type, Callable[[Any], None]] = {
            RequestReceived: self._request,
            DataReceived: self._data,
            StreamEnded: self._stream_ended,
            StreamReset: self._stream_reset,
            WindowUpdated: self._window_updated,
            RemoteSettingsChanged: self._settings_changed,
            PingReceived: self._ping,
            ConnectionTerminated: self._terminated,
        }

    @staticmethod
    def _state_machine(settings: Http2Settings) -> H2Connection:
        config = H2Configuration(
            client_side=False,
            header_encoding=None,
            # headers.py validates requests (stream errors, not h2's connection errors) and
            # builds responses with lower-case names and no connection-specific fields.
            validate_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        h2 = H2Connection(config)
        # Set before the first SETTINGS is sent, so they hold from the first frame on.
        h2.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: settings.max_header_list_size,
                SettingCodes.MAX_FRAME_SIZE: settings.max_frame_size,
                # A smaller window than the default holds only once the client has it
                # (it may send 65,535 bytes before): lowered by `start`, on its ACK.
                SettingCodes.INITIAL_WINDOW_SIZE: max(
                    _DEFAULT_WINDOW, settings.initial_window_size
                ),
                SettingCodes.HEADER_TABLE_SIZE: settings.header_table_size,
                SettingCodes.ENABLE_PUSH: 0,
            },
        )
        h2.max_inbound_frame_size = settings.max_frame_size
        h2.decoder.max_header_list_size = settings.max_header_list_size
        h2.decoder.max_allowed_table_size = settings.header_table_size
        h2.incoming_buffer = BoundedFrameBuffer(settings.max_header_list_size)
        h2.encoder = _PlainEncoder()
        return h2

    # Start ---------------------------------------------------------------------------

    def start(self, transport: asyncio.Transport, data: bytes) -> None:
        """Take over `transport` (from the HTTP/1.1 protocol that saw the preface, or
        at a TLS handshake that chose "h2"), with the bytes read so far."""
        self.transport = transport
        self.state.connections.add(self)
        h2 = self.h2
        h2.initiate_connection()
        settings = self.settings
        if settings.initial_window_size < _DEFAULT_WINDOW:
            h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: settings.initial_window_size})
        # Request-side connection window: room for every stream's window at once.
        window = min(_MAX_WINDOW, settings.max_concurrent_streams * settings.initial_window_size)
        if window > _DEFAULT_WINDOW:
            h2.increment_flow_control_window(window - _DEFAULT_WINDOW)
        self.flush()
        if data:
            self.data_received(data)

    # asyncio.Protocol ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as exc:
            # h2 has queued GOAWAY with the error's code (ENHANCE_YOUR_CALM for an HPACK
            # bomb or an endless header block, PROTOCOL_ERROR, FLOW_CONTROL_ERROR...).
            self._fail(f"{type(exc).__name__}: {exc}")
            return
        handlers = self._handlers
        for event in events:
            handler = handlers.get(type(event))
            if handler is not None:
                handler(event)
                if self._closed:
                    return
        if self._starting:
            self._start_streams()
        self.flush()
        if (
            self.write_paused
            and not self._reading_paused
            and self.transport.get_write_buffer_size() > _CONTROL_BACKLOG
        ):
            self._reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        return None  # the client is done: close (open streams are cancelled)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.state.connections.discard(self)
        self._handlers = {}  # its bound methods would keep this connection in a cycle
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            stream.cancelled()
        self._starting.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        self._write_paused_since = self.state.loop_time()
        self._note_deadline(self._write_paused_since + self.settings.stall_timeout)
        for stream in self.streams.values():
            producer = stream.exchange.producer
            if producer is not None:
                producer.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._write_paused_since = 0.0
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        for stream in list(self.streams.values()):
            stream.producer_may_go()

    # h2 events -------------------------------------------------------------------------

    def _request(self, event: RequestReceived) -> None:
        stream_id = event.stream_id
        if self._draining:
            self.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        stream = Http2Stream(self, stream_id)
        exchange = stream.exchange
        try:
            apply_request_headers(exchange, event.headers or [], self._kinds)
            if exchange.content_length and event.stream_ended is not None:
                # RFC 9113 8.1.1: content-length must equal the DATA that follows, and none
                # does. h2 checks DATA against it, not a HEADERS that ends the stream; sent
                # on as `Content-Length: N` with no body, the upstream would wait for N
                # bytes, or read the next request on its connection as them.
                raise Malformed("content-length on a request without DATA")
        except Malformed as exc:
            self.reset_stream(stream_id, ErrorCodes.PROTOCOL_ERROR)
            _stream_log.info(self.peer_ip, stream=stream_id, detail=f"malformed request: {exc}")
            # Resets the client provokes count like its own ("MadeYouReset", CVE-2025-8671).
            if not self._resets.spend():
                self._calm("too many malformed requests")
            return
        except Refused as exc:
            raw = exchange.request_id
            exchange.request_id = (
                accept_request_id(raw.encode("latin-1")) if raw else new_request_id()
            )
            self._add(stream)
            self.state.log_refusal(self.peer_ip, exc.status, exc.detail)
            exchange.problem(exc.status, exc.detail)
            return
        self._add(stream)
        self._starting.append(stream)

    def _add(self, stream: Http2Stream) -> None:
        stream.open_body(self.state.settings.max_body_bytes)
        if not self.streams:
            self.deadline = math.inf  # busy: each stream's own deadlines bound it
        self.streams[stream.stream_id] = stream

    def _start_streams(self) -> None:
        starting, self._starting = self._starting, []
        handler = self.state.handler
        for stream in starting:
            exchange = stream.exchange
            if stream.closed or exchange.response_started:
                continue  # reset, or refused (body too large) in the same read
            stream.dispatched = True
            try:
                handler.handle(exchange)
            except Exception as exc:  # a handler's bug must not take the other streams down
                stream.handler_failed(exchange, exc)

    def _data(self, event: DataReceived) -> None:
        length = event.flow_controlled_length or 0
        if not length and not event.stream_ended and not self._empty_data.spend():
            self._calm("empty DATA frame flood")
            return
        stream = self.streams.get(event.stream_id or 0)
        if stream is None or stream.closed:
            self.acknowledge(event.stream_id or 0, length)
            return
        stream.received(event.data or b"", length)

    def _stream_ended(self, event: StreamEnded) -> None:
        stream = self.streams.get(event.stream_id or 0)
        if stream is not None:
            expected = stream.exchange.content_length
            if expected is not None and stream.exchange.body.received != expected:
                # RFC 9113 8.1.1: the body ended (by trailers: h2 checks only DATA) short of
                # content-length; the upstream, sent `Content-Length: N`, would wait for the
                # rest or read the next request on its connection as it. Malformed.
                self.reset_stream(stream.stream_id, ErrorCodes.PROTOCOL_ERROR)
                stream.cancelled()
                return
            stream.body_complete()

    def _stream_reset(self, event: StreamReset) -> None:
        stream = self.streams.get(event.stream_id or 0)
        if stream is not None:
            stream.cancelled()
        if event.remote_reset and not self._resets.spend():
            self._calm("rapid reset: too many streams cancelled by the client")

    def _window_updated(self, event: WindowUpdated) -> None:
        if event.stream_id:
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.window_opened()
        else:
            for stream in list(self.streams.values()):
                stream.window_opened()

    def _settings_changed(self, event: RemoteSettingsChanged) -> None:
        if not self._settings_frames.spend():
            self._calm("SETTINGS flood")
            return
        if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
            for stream in list(self.streams.values()):
                stream.window_opened()

    def _ping(self, event: PingReceived) -> None:
        if not self._pings.spend():
            self._calm("PING flood")

    def _terminated(self, event: ConnectionTerminated) -> None:
        # The client's GOAWAY: h2 sends nothing more on this connection, so it ends here.
        self._close()

    # For the streams ---------------------------------------------------------------------

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Give `size` request bytes of window back (to the connection; to the stream if open)."""
        if size and not self._closed:
            with contextlib.suppress(ProtocolError):  # the connection is closing
                self.h2.acknowledge_received_data(size, stream_id)

    def reset_stream(self, stream_id: int, code: ErrorCodes) -> None:
        with contextlib.suppress(ProtocolError):  # already closed on both sides
            self.h2.reset_stream(stream_id, code)

    def stream_done(self, stream: Http2Stream) -> None:
        """A stream will send and receive nothing more: forget it."""
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
            if not self.streams:
                if self._draining:
                    self._flush_now()
                    self._close()
                    return
                self.deadline = self.state.loop_time() + self.state.settings.keepalive_timeout

    def note_blocked(self) -> float:
        """A stream started waiting for window: the sweeper must look at it in time."""
        now = self.state.loop_time()
        self._note_deadline(now + self.settings.stall_timeout)
        return now

    def _note_deadline(self, when: float) -> None:
        self.deadline = min(self.deadline, when)

    def flush(self) -> None:
        """Write what h2 has queued, once per loop iteration: every stream whose upstream
        answered in this iteration shares one write (one syscall, not one per stream)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_scheduled = False
        data = self.h2.data_to_send()
        if data and not self._closed:
            self.transport.write(data)

    # For the sweeper and shutdown (server/state.py: Connection) ----------------------------

    def expire(self) -> None:
        """The deadline passed: idle too long, or a stream (or the socket) stalled."""
        if not self.streams:
            self._goaway()
            self._close()
            return
        now = self.state.loop_time()
        stall = self.settings.stall_timeout
        if self.write_paused and now - self._write_paused_since >= stall:
            _closed_log.info(self.peer_ip, reason="the client stopped reading")
            self.force_close()
            return
        deadline = math.inf
        for stream in list(self.streams.values()):
            since = stream.blocked_since
            if not since:
                continue
            if now - since >= stall:
                _stream_log.info(
                    self.peer_ip,
                    stream=stream.stream_id,
                    detail=f"flow-control window closed for {stall:g}s",
                )
                stream.stalled()
            else:
                deadline = min(deadline, since + stall)
        if self.write_paused:
            deadline = min(deadline, self._write_paused_since + stall)
        self.deadline = deadline
        if not self.streams:
            self.deadline = now + self.state.settings.keepalive_timeout
        self.flush()

    def close_if_idle(self) -> None:
        """Draining: GOAWAY once (open streams finish, new ones are refused), then close."""
        if not self._draining:
            self._goaway()
        if not self.streams:
            self._close()

    def force_close(self) -> None:
        if not self._closed:
            self._closed = True
            self.transport.abort()

    # Ending ----------------------------------------------------------------------------

    def _goaway(self) -> None:
        """A graceful GOAWAY(NO_ERROR), written beside h2 rather than through it: h2's
        close_connection would refuse every frame of the streams still finishing."""
        if self._draining or self._closed:
            return
        self._draining = True
        self._flush_now()
        frame = GoAwayFrame(0)
        frame.last_stream_id = self.h2.highest_inbound_stream_id
        frame.error_code = ErrorCodes.NO_ERROR
        self.transport.write(frame.serialize())

    def _calm(self, reason: str) -> None:
        """A flood: GOAWAY ENHANCE_YOUR_CALM and close; open streams are cancelled."""
        with contextlib.suppress(ProtocolError):
            self.h2.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
        self._fail(reason)

    def _fail(self, reason: str) -> None:
        _closed_log.info(self.peer_ip, reason=reason)
        self._flush_now()
        self._close()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self.transport.close()  # flushes what is buffered; connection_lost cancels the rest
