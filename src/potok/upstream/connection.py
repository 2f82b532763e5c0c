"""One keep-alive connection to an upstream target, parsed with httptools.

The connection knows HTTP framing; what a response means for the client is
the business of the `ResponseListener` (the proxy call) it is lent to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import httptools

from potok.http.http11 import CRLF, HOP_BY_HOP, LAST_CHUNK, connection_tokens

# Response headers the client never gets from the upstream: hop-by-hop ones, and
# X-Request-ID (the gateway sends its own id, the one the upstream was given, once).
_NOT_RELAYED = HOP_BY_HOP | {b"x-request-id"}

if TYPE_CHECKING:
    from potok.upstream.target import Target


class UnsupportedTransferCoding(ValueError):
    """The upstream's Transfer-Encoding names a coding besides chunked (`gzip, chunked`).

    The parser removes only the chunked framing: relaying the rest would hand the
    client compressed bytes with nothing saying so. Like nginx, the answer is 502.
    """

    def __init__(self, value: bytes) -> None:
        super().__init__(
            f"upstream sent a transfer coding the gateway does not decode: "
            f"{value.decode('latin-1')!r}"
        )


# What a closed connection keeps instead of its parser (see connection_lost).
_DETACHED_PARSER = httptools.HttpResponseParser(None)


class ResponseListener(Protocol):
    """Told what the upstream answers; one request at a time."""

    def response_head(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        length: int | None,
        has_body: bool,
    ) -> None: ...

    def response_informational(self, status: int, headers: list[tuple[bytes, bytes]]) -> None: ...

    def response_body(self, data: bytes) -> None: ...

    def response_complete(self, reusable: bool) -> None: ...

    def response_switching(self, headers: list[tuple[bytes, bytes]], early: bytes) -> None: ...

    def upstream_failed(self, reason: str, before_response: bool) -> None: ...

    def flush_client(self) -> None: ...

    def pause_client_reading(self) -> None: ...

    def resume_client_reading(self) -> None: ...


class DiscardingListener:
    """A `ResponseListener` for a request nobody downstream waits on (a webhook forward, a
    mirrored copy): keeps the status, drops the body, has no client to flush or pause.
    Subclasses say what completion, a protocol switch and a failure mean."""

    __slots__ = ("status",)

    def __init__(self) -> None:
        self.status = 0

    def response_head(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        length: int | None,
        has_body: bool,
    ) -> None:
        self.status = status

    def response_informational(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        return

    def response_body(self, data: bytes) -> None:
        return

    def flush_client(self) -> None:
        return

    def pause_client_reading(self) -> None:
        return

    def resume_client_reading(self) -> None:
        return


class UpstreamConnection(asyncio.Protocol):
    """A client connection to one target, lent to one `ResponseListener` at a time."""

    __slots__ = (
        "_chunked_request",
        "_complete_after_feed",
        "_conn_header",
        "_head_request",
        "_headers",
        "_length",
        "_parser",
        "_reading_paused",
        "_reason",
        "_response_chunked",
        "_response_started",
        "_tunnel_peer",
        "_tunnel_touch",
        "_upgrade_header",
        "closed",
        "idle_since",
        "listener",
        "requests_sent",
        "target",
        "transport",
        "write_paused",
    )

    def __init__(self, target: Target) -> None:
        self.target = target
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.listener: ResponseListener | None = None
        self.closed = False
        self.idle_since = 0.0
        self.requests_sent = 0
        self.write_paused = False
        self._parser = httptools.HttpResponseParser(self)
        self._reading_paused = False
        self._tunnel_peer: asyncio.Transport | None = None
        self._tunnel_touch: Callable[[], None] | None = None
        self._reset_response_state()

    def _reset_response_state(self) -> None:
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._length: int | None = None
        self._response_chunked = False
        self._conn_header: bytes | None = None
        self._upgrade_header: tuple[bytes, bytes] | None = None
        self._response_started = False
        self._complete_after_feed = False
        self._head_request = False
        self._chunked_request = False

    # Used by the proxy call -----------------------------------------------------

    def send_request(
        self, listener: ResponseListener, head: bytes, *, head_request: bool, chunked: bool
    ) -> None:
        self._reset_response_state()
        self.listener = listener
        self._head_request = head_request
        self._chunked_request = chunked
        self.requests_sent += 1
        self.transport.write(head)

    def write_body(self, data: bytes) -> None:
        """Request body bytes (the `BodySink` side), framed as the head announced."""
        if self.closed or not data:
            return
        if self._chunked_request:
            self.transport.writelines((b"%x\r\n" % len(data), data, CRLF))
        else:
            self.transport.write(data)

    def end_body(self) -> None:
        if self._chunked_request and not self.closed:
            self.transport.write(LAST_CHUNK)

    def release(self) -> None:
        """Back to idle after a complete exchange."""
        self.listener = None
        if self._reading_paused:
            self.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.listener = None
            self.transport.close()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.listener = None
            self.transport.abort()

    def pause_reading(self) -> None:
        if not self._reading_paused and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    # Tunnel (after 101) -- the client side writes through this ------------------

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def write_eof(self) -> None:
        if not self.closed and self.transport.can_write_eof():
            self.transport.write_eof()

    def start_tunnel(
        self, client_transport: asyncio.Transport, touch: Callable[[], None] | None = None
    ) -> None:
        self._tunnel_peer = client_transport
        self._tunnel_touch = touch

    # asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed = self.closed
        self.closed = True
        # The parser holds this connection's bound methods: a reference cycle that would
        # keep every closed connection (and its buffers) until a cyclic collection. No
        # response bytes can arrive any more.
        self._parser = _DETACHED_PARSER
        self.target.pool.discard(self)
        if self._tunnel_peer is not None:
            self._tunnel_peer.close()
            self._tunnel_peer = None
            return
        listener = self.listener
        self.listener = None
        if listener is None or was_closed:
            return
        if (
            self._response_started
            and self._length is None
            and not self._response_chunked
            and not self._head_request
        ):
            # A body delimited by the connection closing has simply ended.
            listener.response_complete(False)
            listener.flush_client()
            return
        reason = (
            "upstream closed the connection" if exc is None else f"upstream connection lost: {exc}"
        )
        listener.upstream_failed(reason, before_response=not self._response_started)

    def data_received(self, data: bytes) -> None:
        if self._tunnel_peer is not None:
            self._tunnel_peer.write(data)
            if self._tunnel_touch is not None:
                self._tunnel_touch()
            return
        listener = self.listener
        if listener is None:
            # Bytes on an idle connection: the peer is confused; never reuse it.
            self.abort()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._switching(data[upgrade.args[0] :])
        except httptools.HttpParserError as exc:
            cause = exc.__context__  # what a callback of ours raised
            self._invalid(
                str(cause)
                if isinstance(cause, UnsupportedTransferCoding)
                else f"invalid HTTP from upstream: {exc}"
            )
        else:
            if self._complete_after_feed:
                self._finish_head_response()
        listener.flush_client()

    def eof_received(self) -> bool | None:
        if self._tunnel_peer is not None:
            if self._tunnel_peer.can_write_eof():
                self._tunnel_peer.write_eof()
            return True
        return None

    def pause_writing(self) -> None:
        self.write_paused = True
        if self._tunnel_peer is not None:
            self._tunnel_peer.pause_reading()
        elif self.listener is not None:
            self.listener.pause_client_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._tunnel_peer is not None:
            self._tunnel_peer.resume_reading()
        elif self.listener is not None:
            self.listener.resume_client_reading()

    # httptools callbacks ---------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._response_started:
            return  # trailers
        lower = name.lower()
        if lower == b"content-length":
            self._length = int(value)
        elif lower in _NOT_RELAYED:
            if lower == b"transfer-encoding":
                codings = [c.strip() for c in value.lower().split(b",")]
                if any(c and c != b"chunked" for c in codings):
                    raise UnsupportedTransferCoding(value)
                self._response_chunked = b"chunked" in codings
            elif lower == b"connection":
                self._conn_header = (
                    value if self._conn_header is None else self._conn_header + b"," + value
                )
            elif lower == b"upgrade":
                self._upgrade_header = (name, value)  # relayed with a 101 only
            # x-request-id: the client gets the gateway's, on every answer
        else:
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        listener = self.listener
        if listener is None:
            return
        status = self._parser.get_status_code()
        headers = self._headers
        if self._conn_header is not None:
            named = connection_tokens(self._conn_header) - {b"keep-alive", b"close", b"upgrade"}
            if named:
                headers = [(n, v) for n, v in headers if n.lower() not in named]
        if status == 101:
            if self._upgrade_header is not None:
                headers.append(self._upgrade_header)
            self._headers = headers
            return  # the switch is completed when llhttp reports the upgrade
        if status < 200:
            self._headers = []
            self._reason = b""
            self._length = None
            self._upgrade_header = None
            if status != 100:  # the gateway answers Expect itself
                listener.response_informational(status, headers)
            return
        self._response_started = True
        has_body = not (self._head_request or status in (204, 304))
        length = None if status == 204 else self._length
        listener.response_head(status, self._reason, headers, length, has_body)
        if self._head_request:
            # httptools cannot be told a response answers HEAD; finish it ourselves.
            self._complete_after_feed = True

    def on_body(self, data: bytes) -> None:
        if self.listener is not None and not self._head_request:
            self.listener.response_body(data)

    def on_message_complete(self) -> None:
        if not self._response_started or self._head_request:
            return  # an informational response; the real one follows
        listener = self.listener
        if listener is not None:
            listener.response_complete(self._parser.should_keep_alive())

    # -----------------------------------------------------------------------------

    def _finish_head_response(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        keep = self._conn_header is None or self._conn_header.lower().find(b"close") < 0
        listener = self.listener
        if listener is not None:
            listener.response_complete(keep)

    def _switching(self, early: bytes) -> None:
        listener = self.listener
        if listener is None or self._parser.get_status_code() != 101:
            self._invalid("upstream switched protocols without being asked")
            return
        self._response_started = True
        listener.response_switching(self._headers, early)

    def _invalid(self, reason: str) -> None:
        listener = self.listener
        started = self._response_started
        self.abort()
        if listener is not None:
            listener.upstream_failed(reason, before_response=not started)
