"""One HTTP/2 stream: the `Responder` of the one exchange it carries.

Everything the pipeline does to an HTTP/1.1 connection it does to a stream: `send_head`,
`send_body`, `end_response`, `abort`, `pause_reading`, `write_paused`. The stream turns
them into h2 calls on its connection, and ties HTTP/2 flow control to the exchange's
back-pressure both ways:

- request body: DATA is acknowledged (WINDOW_UPDATE) as soon as the body has passed it
  on, unless the consumer paused reading (the upstream's write buffer is full, or nobody
  consumes the body yet and it has piled up): then acknowledgements wait, the client's
  window closes, and it stops sending — this stream only, the others go on;
- response body: DATA goes out as far as the client's stream and connection windows
  allow; the rest waits here and the producer (the upstream connection) is paused until
  a WINDOW_UPDATE lets it move. A stream that waits longer than `stall_timeout` is reset
  (the connection's `expire`), so a client that never opens its window pins nothing.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from h2.errors import ErrorCodes

from potok.exchange import Exchange, Headers, ResponseHook, Tunnel
from potok.http2.headers import TRAILER_DROPPED, response_headers, status_bytes
from potok.server.body import IncomingBody

if TYPE_CHECKING:
    from potok.http2.connection import Http2Connection


class Http2Stream:
    """The server side of one stream; `exchange.connection` is this object."""

    __slots__ = (
        "_drain_waiters",
        "_ended",
        "_finished",
        "_pending",
        "_read_pauses",
        "_trailers",
        "_unacked",
        "blocked_since",
        "closed",
        "conn",
        "dispatched",
        "end_pending",
        "exchange",
        "listener",
        "peer_ip",
        "stream_id",
        "tls",
    )

    def __init__(self, conn: Http2Connection, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.peer_ip = conn.peer_ip
        self.listener = conn.state.listener  # what the connection's listener serves
        self.tls = conn.tls  # the connection's TLS session (None on h2c)
        self.closed = False  # reset, or the connection is gone
        self._ended = False  # END_STREAM sent (or queued behind pending DATA)
        self._finished = False  # the handler heard `finished`
        self.end_pending = False
        self.dispatched = False  # handed to the handler (which then hears `finished`)
        self._pending: list[bytes] = []  # response DATA waiting for window
        self._trailers: list[tuple[bytes, bytes]] | None = None  # sent after the pending DATA
        self.blocked_since = 0.0  # loop time the response started waiting for window
        self._read_pauses = 0
        self._unacked = 0  # request DATA bytes received but not acknowledged
        self._drain_waiters: list[asyncio.Future[None]] = []
        exchange = Exchange(self, time.perf_counter())
        exchange.version = "2"
        self.exchange = exchange

    def open_body(self, max_bytes: int) -> None:
        self.exchange.body = IncomingBody(self, max_bytes, self.exchange.expect_continue)

    # Responder: plain facts -----------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.conn.loop

    @property
    def transport(self) -> asyncio.Transport:
        return self.conn.transport

    @property
    def answer_hooks(self) -> tuple[ResponseHook, ...]:
        return self.conn.state.handler.answer_hooks

    @property
    def write_paused(self) -> bool:
        return bool(self._pending) or self.conn.write_paused

    def is_current(self, exchange: Exchange) -> bool:
        return exchange is self.exchange and not self._finished and not self.closed

    def touch(self) -> None:
        pass

    # Request body: flow control tied to the consumer ------------------------------------

    def received(self, data: bytes, flow_length: int) -> None:
        """DATA for this stream: into the body, acknowledged unless reading is paused."""
        exchange = self.exchange
        exchange.bytes_in += len(data)
        body: IncomingBody = exchange.body  # type: ignore[assignment]
        if not body.feed(data):
            self.conn.acknowledge(self.stream_id, flow_length)
            self._refuse_body()
            return
        if self._read_pauses:
            self._unacked += flow_length
        else:
            self.conn.acknowledge(self.stream_id, flow_length)

    def body_complete(self) -> None:
        body: IncomingBody = self.exchange.body  # type: ignore[assignment]
        if not body.complete:
            body.finish()
        if self._ended and not self._pending:
            self.conn.stream_done(self)

    def pause_reading(self) -> None:
        self._read_pauses += 1

    def resume_reading(self) -> None:
        self._read_pauses -= 1
        if self._read_pauses == 0 and self._unacked:
            unacked, self._unacked = self._unacked, 0
            self.conn.acknowledge(self.stream_id, unacked)
            self.conn.flush()

    def send_continue(self) -> None:
        """100 Continue: the client may send the body it held back."""
        if not self.exchange.response_started and not self.closed:
            self.conn.h2.send_headers(self.stream_id, [(b":status", b"100")])
            self.conn.flush()

    def _refuse_body(self) -> None:
        """The body passed its limit: 413 if nothing was answered yet, else a reset."""
        exchange = self.exchange
        self.conn.state.log_refusal(self.peer_ip, 413, "request body exceeds the limit")
        if exchange.on_cancel is not None:
            exchange.on_cancel()
            exchange.on_cancel = None
        exchange.body.detach()
        if exchange.response_started or not self.is_current(exchange):
            self.abort(exchange, "request body exceeds the limit")
        else:
            exchange.problem(413, "request body exceeds the limit", title="Request body too large")

    # Responses ---------------------------------------------------------------------

    def send_head(
        self,
        exchange: Exchange,
        status: int,
        reason: bytes | None,
        headers: Headers,
        *,
        length: int | None,
        body: bool,
    ) -> None:
        if exchange is not self.exchange or exchange.response_started or self.closed:
            return
        exchange.response_started = True
        exchange.status = status
        fields = response_headers(status, headers, length, exchange)
        self.conn.h2.send_headers(self.stream_id, fields, end_stream=not body)
        if not body:
            self._ended = True

    def send_informational(self, exchange: Exchange, status: int, headers: Headers) -> None:
        if exchange is self.exchange and not exchange.response_started and not self.closed:
            fields = [(b":status", status_bytes(status))]
            fields += [(name.lower(), value) for name, value in headers]
            self.conn.h2.send_headers(self.stream_id, fields)

    def send_body(self, exchange: Exchange, data: bytes) -> None:
        if exchange is not self.exchange or not data or self._ended or self.closed:
            return
        exchange.bytes_out += len(data)
        if self._pending:
            self._pending.append(data)
        else:
            self._send(data)

    def _send(self, data: bytes) -> None:
        """As much of `data` as the windows allow; the rest waits in `_pending`."""
        h2 = self.conn.h2
        stream_id = self.stream_id
        window = h2.local_flow_control_window(stream_id)
        frame = h2.max_outbound_frame_size
        size = len(data)
        if size <= window and size <= frame:
            h2.send_data(stream_id, data)
            return
        view = memoryview(data)
        sent = 0
        while sent < size and window > 0:
            part = min(size - sent, window, frame)
            h2.send_data(stream_id, view[sent : sent + part].tobytes())
            sent += part
            window -= part
        if sent < size:
            self._pending.append(data[sent:])
            self._blocked()

    def window_opened(self) -> None:
        """A WINDOW_UPDATE (or a larger initial window): send what waits."""
        if not self._pending or self.closed:
            return
        pending, self._pending = self._pending, []
        for index, data in enumerate(pending):
            self._send(data)
            if self._pending:  # the window closed again: keep the rest, in order
                self._pending.extend(pending[index + 1 :])
                return
        self.blocked_since = 0.0
        if self.end_pending:
            self.end_pending = False
            self._send_end()
            if self.exchange.body.complete:
                self.conn.stream_done(self)
            else:
                self.exchange.body.detach()
                self.reset(ErrorCodes.NO_ERROR)  # as in end_response: stop the upload
            return
        self._unblocked()

    def _blocked(self) -> None:
        # From the first time the response could not move until it has all gone out: a
        # client opening its window a byte at a time does not restart the clock.
        if not self.blocked_since:
            self.blocked_since = self.conn.note_blocked()
        producer = self.exchange.producer
        if producer is not None:
            producer.pause_reading()

    def _unblocked(self) -> None:
        if not self.conn.write_paused:
            self.producer_may_go()

    def producer_may_go(self) -> None:
        """Neither this stream's window nor the connection's socket holds the response back."""
        if self._pending:
            return
        producer = self.exchange.producer
        if producer is not None:
            producer.resume_reading()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    def flush(self) -> None:
        self.conn.flush()

    async def drain(self) -> None:
        if self.write_paused and not self.closed:
            waiter = self.conn.loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def end_response(self, exchange: Exchange) -> None:
        if exchange is not self.exchange or self._finished or self.closed:
            return
        if not self._ended:
            self._ended = True
            if self._pending:
                self.end_pending = True  # END_STREAM follows the last DATA (window_opened)
            else:
                self._send_end()
        self.conn.flush()
        self._finish()
        if not self._pending:
            if exchange.body.complete:
                self.conn.stream_done(self)
            else:
                # RFC 9113 8.1: a complete response may end the request early; NO_ERROR
                # tells the client to stop sending the body nobody will read.
                exchange.body.detach()
                self.reset(ErrorCodes.NO_ERROR)

    def end_with_trailers(self, exchange: Exchange, trailers: Headers) -> None:
        """End the response with a trailer section (gRPC's `grpc-status`): a HEADERS frame
        with END_STREAM after the last DATA, waiting with it for the client's window."""
        if exchange is not self.exchange or self._finished or self.closed or self._ended:
            return
        fields = [
            (name.lower(), value)
            for name, value in trailers
            if name[:1] != b":" and name.lower() not in TRAILER_DROPPED
        ]
        if fields:
            self._trailers = fields
        self.end_response(exchange)

    def _send_end(self) -> None:
        trailers = self._trailers
        if trailers is None:
            self.conn.h2.end_stream(self.stream_id)
        else:
            self._trailers = None
            self.conn.h2.send_headers(self.stream_id, trailers, end_stream=True)

    def reset_response(self, exchange: Exchange, code: ErrorCodes) -> None:
        """Like `abort`, with the RST_STREAM code the upstream's reset carried (a relayed
        CANCEL stays a CANCEL for the client)."""
        if exchange is not self.exchange or self._finished or self.closed:
            return
        if not exchange.status:
            exchange.status = 502
        self.reset(code)
        self._finish()

    def abort(self, exchange: Exchange, reason: str) -> None:
        """The response cannot be completed: the client sees the stream reset."""
        if exchange is not self.exchange or self._finished or self.closed:
            return
        if not exchange.status:
            exchange.status = 502
        self.reset(ErrorCodes.INTERNAL_ERROR)
        self._finish()

    def send_switching(
        self,
        exchange: Exchange,
        headers: Headers,
        tunnel: Tunnel,
        idle_timeout: float | None = None,
    ) -> None:
        """No 101 on HTTP/2 (a request cannot ask for one: `upgrade` is malformed)."""
        tunnel.close()
        self.abort(exchange, "protocol switch on HTTP/2")

    def handler_failed(self, exchange: Exchange, exc: Exception) -> None:
        self.conn.state.log_error("handler failed", exc=exc)
        if not exchange.response_started:
            exchange.problem(500, "internal gateway error")
        else:
            self.abort(exchange, "handler failed")

    # Ending --------------------------------------------------------------------------

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            if self.dispatched:
                self.conn.state.handler.finished(self.exchange)

    def reset(self, code: ErrorCodes) -> None:
        """Reset the stream from this side (RST_STREAM) and forget it."""
        if self.closed:
            return
        self.conn.reset_stream(self.stream_id, code)
        self.conn.flush()  # an abort from an upstream callback: nothing else would write it
        self.gone()

    def cancelled(self) -> None:
        """The client reset the stream, or the connection went away: like an HTTP/1.1
        client that disconnects, 499 and the upstream call cancelled (not its failure)."""
        exchange = self.exchange
        if not self._finished:
            if not exchange.status:
                exchange.status = 499
            if exchange.on_cancel is not None:
                exchange.on_cancel()
                exchange.on_cancel = None
            self._finish()
        self.gone()

    def stalled(self) -> None:
        """The client kept the window closed past `stall_timeout`: reset, upstream cancelled."""
        if not self.closed:
            self.conn.reset_stream(self.stream_id, ErrorCodes.CANCEL)
        self.cancelled()

    def gone(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._pending = []
        if self.exchange.body is not None:
            self.exchange.body.detach()
        self.exchange.producer = None
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("stream reset"))
        self._drain_waiters.clear()
        self.conn.stream_done(self)
