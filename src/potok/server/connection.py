"""One client connection: httptools parsing, pipelining, keep-alive, back-pressure.

Parser callbacks only record what arrived; requests are dispatched after
`feed_data` returns, one at a time and in order, so a handler never runs
inside the parser and pipelined responses cannot interleave.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import httptools

from potok.errors import problem_body
from potok.exchange import Exchange, ResponseHook, Tunnel
from potok.http.host import valid_host
from potok.http.http11 import (
    CONTINUE_100,
    CRLF,
    HOP_BY_HOP,
    LAST_CHUNK,
    connection_tokens,
    date_header,
    header_block,
    status_line,
)
from potok.http2.sniff import PrefaceSniffer, alpn_chose_h2
from potok.observability.request_id import accept_request_id, new_request_id
from potok.server.body import IncomingBody
from potok.server.state import BUSY, IDLE, READING_HEAD, TUNNEL

if TYPE_CHECKING:
    from potok.server.state import ServerState
    from potok.tls.session import TlsInfo


class _Reject(Exception):
    """Raised from a parser callback to refuse the request with `status`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _PendingError:
    """A refusal queued behind pipelined requests that must be answered first."""

    __slots__ = ("detail", "status")

    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail


# Framing of the response body being written.
_NO_BODY, _LENGTH, _CHUNKED, _UNTIL_CLOSE = 0, 1, 2, 3


# Special request headers, pulled out while parsing (value: what to do with them).
(
    _H_HOST,
    _H_CL,
    _H_TE,
    _H_CONNECTION,
    _H_EXPECT,
    _H_UPGRADE,
    _H_XFF,
    _H_XFP,
    _H_XFH,
    _H_RID,
    _H_AUTHORIZATION,
    _H_PROXY,
    _H_TRACE,
    _H_DROP,
) = range(14)
_SPECIAL: dict[bytes, int] = {
    b"host": _H_HOST,
    b"content-length": _H_CL,
    b"transfer-encoding": _H_TE,
    b"connection": _H_CONNECTION,
    b"expect": _H_EXPECT,
    b"upgrade": _H_UPGRADE,
    b"x-forwarded-for": _H_XFF,
    b"x-forwarded-proto": _H_XFP,
    b"x-forwarded-host": _H_XFH,
    b"x-request-id": _H_RID,
    b"authorization": _H_AUTHORIZATION,
    # Other proxies' statements of the client address: believed only from trusted proxies.
    b"forwarded": _H_PROXY,
    b"x-real-ip": _H_PROXY,
    # W3C trace context: forwarded as any header, and noted so that a tracer need not
    # search the header list for it (it replaces them with its own).
    b"traceparent": _H_TRACE,
    b"tracestate": _H_TRACE,
}
for _name in HOP_BY_HOP:
    _SPECIAL.setdefault(_name, _H_DROP)


@functools.lru_cache(maxsize=8)
def _header_kinds(dropped: frozenset[bytes]) -> dict[bytes, int]:
    """_SPECIAL plus the gateway-only headers to drop (one table per settings, not per
    request: the parser callback does one dict lookup per header either way)."""
    return {**dict.fromkeys(dropped, _H_DROP), **_SPECIAL}


# What a closed connection keeps instead of its parser (see connection_lost).
_DETACHED_PARSER = httptools.HttpRequestParser(None)

_REQUEST_ID = b"X-Request-ID: "


def _transfer_codings_problem(value: bytes) -> _Reject | None:
    """RFC 9112 6.1: `chunked` alone is what a request may use here. A chunked body with
    another coding under it (`gzip, chunked`) is 501, chunked twice is 400; a list that
    does not end in chunked is left to llhttp, which refuses it (400)."""
    codings = [c.strip().lower() for c in value.split(b",") if c.strip()]
    if len(codings) < 2 or codings[-1] != b"chunked":
        return None
    if b"chunked" in codings[:-1]:
        return _Reject(400, "chunked transfer coding applied more than once")
    names = ", ".join(c.decode("latin-1") for c in codings[:-1])
    return _Reject(501, f"transfer coding not implemented: {names}")


_ERROR_TITLES = {
    400: "Malformed HTTP request",
    408: "Request head not received in time",
    413: "Request body too large",
    417: "Expectation not supported",
    501: "Transfer coding not implemented",
    505: "HTTP version not supported",
    414: "Request target too long",
    431: "Request header fields too large",
}


class ClientConnection(asyncio.Protocol):
    """The server side of one TCP connection: the `Responder` of its exchanges."""

    __slots__ = (
        "_active",
        "_closed",
        "_connection_header",
        "_dispatching",
        "_drain_waiters",
        "_exchange",
        "_framing",
        "_good_host",
        "_head_bytes",
        "_header_bytes",
        "_header_count",
        "_header_kinds",
        "_in_head",
        "_keep_alive",
        "_parser",
        "_pending",
        "_pipeline_paused",
        "_queue",
        "_read_pauses",
        "_transfer_encoding",
        "_tunnel",
        "_tunnel_idle",
        "_url",
        "deadline",
        "listener",
        "loop",
        "peer_ip",
        "phase",
        "state",
        "tls",
        "transport",
        "write_paused",
    )

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.loop = state.loop
        self.listener = state.listener
        self.tls: TlsInfo | None = None  # TlsClientConnection sets it
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer_ip = ""
        self._parser = httptools.HttpRequestParser(self)
        self._exchange: Exchange | None = None  # being parsed
        self._active: Exchange | None = None  # being answered
        self._queue: deque[Exchange | _PendingError] = deque()
        self._pending: list[bytes] = []
        self._url = b""
        self._in_head = False
        self._head_bytes = 0
        self._header_bytes = 0
        self._header_count = 0
        self._header_kinds = _header_kinds(state.settings.dropped_headers)
        self._connection_header: bytes | None = None
        self._transfer_encoding: bytes | None = None
        self._good_host = b""  # the last Host value found valid on this connection
        self._framing = _NO_BODY
        self._keep_alive = True
        self._read_pauses = 0
        self._pipeline_paused = False
        self._dispatching = False
        self._closed = False
        # With HTTP/2 on, the first bytes go to the preface sniffer (http2/sniff.py): the
        # tunnel branch of data_received, so HTTP/1.1 pays for it on the first read only.
        http2 = state.settings.http2
        self._tunnel: Tunnel | None = PrefaceSniffer(self, http2) if http2 is not None else None
        self._tunnel_idle: float | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.write_paused = False
        self.phase = IDLE
        self.deadline = 0.0

    # asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername")
        # Interned: every connection from one address shares the string, so per-IP tables
        # (rate limits) find it by identity, its hash computed once.
        ip = peer[0] if isinstance(peer, tuple) else "unix"
        if ip.startswith("::ffff:") and "." in ip:
            # An IPv4 client of a dual-stack ("::") listener: logs, X-Forwarded-For and
            # per-IP limits use its IPv4 form, once per connection.
            ip = ip[7:]
        self.peer_ip = sys.intern(ip)
        self.state.connections.add(self)
        self.phase = IDLE
        self.deadline = self.state.loop_time() + self.state.settings.header_read_timeout
        sniffer = self._tunnel
        if isinstance(sniffer, PrefaceSniffer) and alpn_chose_h2(transport):
            sniffer.switch(b"")

    def not_http2(self, data: bytes) -> None:
        """The first bytes are not the HTTP/2 preface: HTTP/1.1 from here on."""
        self._tunnel = None
        self.data_received(data)

    def hand_over(self, protocol: asyncio.Protocol) -> None:
        """HTTP/2 takes the connection over from its first bytes: this object is done."""
        self._tunnel = None
        self._closed = True
        self._parser = _DETACHED_PARSER  # the parser's callbacks would keep this alive
        self.state.connections.discard(self)
        self.transport.set_protocol(protocol)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        # The parser holds this connection's bound methods: a reference cycle that would
        # keep every closed connection (and its buffers) until a cyclic collection.
        self._parser = _DETACHED_PARSER
        self.state.connections.discard(self)
        if self._tunnel is not None:
            self._tunnel.close()
            self._tunnel = None
        active = self._active
        if active is not None:
            self._active = None
            if not active.status:
                active.status = 499  # client closed the request (nginx's convention)
            if active.on_cancel is not None:
                active.on_cancel()
            self.state.handler.finished(active)
        self._queue.clear()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("client went away"))
        self._drain_waiters.clear()

    def eof_received(self) -> bool | None:
        if self._tunnel is not None:
            self._tunnel.write_eof()
            return True
        # Like nginx: a client that stops sending while its request is being
        # answered is treated as gone (499), so upstream work is cancelled
        # rather than left running for nobody.
        return None

    def pause_writing(self) -> None:
        self.write_paused = True
        active = self._active
        if active is not None and active.producer is not None:
            active.producer.pause_reading()
        if self._tunnel is not None:
            self._tunnel.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        active = self._active
        if active is not None and active.producer is not None:
            active.producer.resume_reading()
        if self._tunnel is not None:
            self._tunnel.resume_reading()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    def data_received(self, data: bytes) -> None:
        if self._tunnel is not None:
            if self._tunnel_idle is not None:
                self.deadline = self.state.loop_time() + self._tunnel_idle
            self._tunnel.write(data)
            return
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgrade_requested(data[upgrade.args[0] :])
        except httptools.HttpParserCallbackError as exc:
            reason = exc.__context__
            if isinstance(reason, _Reject):
                self._refuse(reason.status, reason.detail)
            else:
                self.state.log_error("request handling failed", exc=reason)
                self._refuse(500, "internal error while reading the request")
        except httptools.HttpParserError as exc:
            self._refuse(400, _parser_message(exc))
        else:
            limit = self.state.settings.max_head_total
            if self._in_head and self._head_bytes > limit:
                self._refuse(431, "request head too large")
        self._dispatch()

    # httptools callbacks --------------------------------------------------------

    def on_message_begin(self) -> None:
        exchange = Exchange(self, time.perf_counter())
        self._exchange = exchange
        self._url = b""
        self._in_head = True
        self._head_bytes = 0
        self._header_bytes = 0
        self._header_count = 0
        self._connection_header = None
        self._transfer_encoding = None
        if self._active is None:
            self.phase = READING_HEAD
            self.deadline = self.state.loop_time() + self.state.settings.header_read_timeout

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.state.settings.max_url_bytes:
            raise _Reject(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        exchange = self._exchange
        if exchange is None or not self._in_head:
            return  # trailers: dropped, never forwarded
        settings = self.state.settings
        self._header_bytes += len(name) + len(value) + 4
        self._header_count += 1
        if (
            self._header_bytes > settings.max_header_bytes
            or self._header_count > settings.max_headers
        ):
            raise _Reject(431, "request header fields too large")
        lower = name.lower()
        kind = self._header_kinds.get(lower)
        if kind is None:
            # `X_User_Id` is `X-User-Id` to servers that map both to HTTP_X_USER_ID (WSGI,
            # CGI): an underscore twin of a header the gateway owns is dropped like it.
            # (`95 in` is a memchr; the normalised lookup runs only for names with a '_'.)
            if 95 not in lower or self._header_kinds.get(lower.replace(b"_", b"-")) is None:
                exchange.headers.append((name, value))
        elif kind == _H_HOST:
            if exchange.host:
                raise _Reject(400, "more than one Host header")
            if value != self._good_host:
                # Checked once per connection while the client keeps sending the same Host
                # (a bytes comparison, no hashing of the new value).
                if not valid_host(value):
                    raise _Reject(400, "invalid Host header")
                self._good_host = value
            exchange.host = value
        elif kind == _H_CL:
            # llhttp has already refused duplicates, non-digits and CL with TE.
            exchange.content_length = int(value)
        elif kind == _H_TE:
            # llhttp checks the list ends in chunked; the rest is checked with the head.
            te = self._transfer_encoding
            self._transfer_encoding = value if te is None else te + b"," + value
        elif kind == _H_CONNECTION:
            self._connection_header = (
                value if self._connection_header is None else self._connection_header + b"," + value
            )
        elif kind == _H_EXPECT:
            if value.lower() != b"100-continue":
                raise _Reject(417, "only 'Expect: 100-continue' is supported")
            exchange.expect_continue = True
        elif kind == _H_UPGRADE:
            exchange.upgrade = value
        elif kind == _H_XFF:
            exchange.forwarded_for = (
                value if exchange.forwarded_for is None else exchange.forwarded_for + b", " + value
            )
        elif kind == _H_XFP:
            exchange.forwarded_proto = value
        elif kind == _H_XFH:
            exchange.forwarded_host = value
        elif kind == _H_RID:
            exchange.request_id = value.decode("latin-1")
        elif kind == _H_AUTHORIZATION:
            # Kept in the headers (forwarded unless a route says otherwise) and noted, so
            # the JWT check need not search the header list for it.
            exchange.headers.append((name, value))
            if exchange.authorization is None:
                exchange.authorization = value
        elif kind == _H_PROXY:
            # Kept aside: apply_forwarding forwards them from trusted proxies only.
            if exchange.proxy_headers is None:
                exchange.proxy_headers = [(name, value)]
            else:
                exchange.proxy_headers.append((name, value))
        elif kind == _H_TRACE:
            exchange.headers.append((name, value))
            exchange.trace_headers = True
        # _H_DROP: hop-by-hop or set by the gateway only: never forwarded

    def on_headers_complete(self) -> None:
        exchange = self._exchange
        assert exchange is not None
        self._in_head = False
        parser = self._parser
        exchange.method = parser.get_method()
        exchange.version = parser.get_http_version()
        exchange.keep_alive = parser.should_keep_alive()
        if exchange.version not in ("1.1", "1.0"):
            raise _Reject(505, f"HTTP/{exchange.version} is not supported here")
        if self._transfer_encoding is not None:
            if exchange.version != "1.1":
                # RFC 9112 6.1: framing of an HTTP/1.0 message with Transfer-Encoding is faulty.
                raise _Reject(400, "Transfer-Encoding in an HTTP/1.0 request")
            problem = _transfer_codings_problem(self._transfer_encoding)
            if problem is not None:
                raise problem
        url = self._url
        exchange.target = url
        query_at = url.find(b"?")
        if query_at >= 0:
            exchange.path, exchange.query = url[:query_at], url[query_at:]
        else:
            exchange.path = url
        if exchange.version == "1.1" and not exchange.host:
            raise _Reject(400, "HTTP/1.1 request without Host")
        if not url.startswith(b"/"):
            if exchange.method == b"OPTIONS" and url == b"*":
                exchange.path = b"*"
            else:
                # Absolute-form targets are for forward proxies; this is a gateway.
                raise _Reject(400, "request target must be a path")
        incoming_id = exchange.request_id
        exchange.request_id = (
            accept_request_id(incoming_id.encode("latin-1")) if incoming_id else new_request_id()
        )
        if self._connection_header is not None:
            self._apply_connection_header(exchange, self._connection_header)
        if exchange.upgrade is not None and not parser.should_upgrade():
            exchange.upgrade = None
        exchange.body = IncomingBody(
            self, self.state.settings.max_body_bytes, exchange.expect_continue
        )
        self._queue.append(exchange)
        if self._active is not None and not self._pipeline_paused:
            # A pipelined request waits its turn; stop reading more until it starts.
            self._pipeline_paused = True
            self.pause_reading()

    def on_body(self, data: bytes) -> None:
        exchange = self._exchange
        if exchange is None:
            return
        exchange.bytes_in += len(data)
        # Handlers see the body as a `RequestBody`; the parser feeds the server's own.
        body: IncomingBody = exchange.body  # type: ignore[assignment]
        if not body.feed(data):
            raise _Reject(413, "request body exceeds the limit")

    def on_message_complete(self) -> None:
        exchange = self._exchange
        if exchange is not None:
            self._exchange = None
            body: IncomingBody = exchange.body  # type: ignore[assignment]  # see on_body
            body.finish()

    # Dispatch ----------------------------------------------------------------

    def _apply_connection_header(self, exchange: Exchange, value: bytes) -> None:
        tokens = connection_tokens(value)
        tokens.discard(b"keep-alive")
        tokens.discard(b"close")
        tokens.discard(b"upgrade")
        if tokens:
            # Headers named in Connection are hop-by-hop too (RFC 9110 7.6.1).
            exchange.headers = [(n, v) for n, v in exchange.headers if n.lower() not in tokens]
            if b"x-forwarded-for" in tokens:
                exchange.forwarded_for = None
            if b"x-request-id" in tokens:
                exchange.request_id = new_request_id()
            if b"authorization" in tokens:
                exchange.authorization = None
            if exchange.proxy_headers is not None:
                exchange.proxy_headers = [
                    (n, v) for n, v in exchange.proxy_headers if n.lower() not in tokens
                ]

    def _dispatch(self) -> None:
        """Start queued requests one after another.

        A loop, not recursion: a request answered at once (a 404) ends inside
        `_start_next`, and its `end_response` comes back here; the nested call
        returns and this loop takes the next one, so thousands of pipelined
        requests cannot exhaust the stack.
        """
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._active is None and self._queue and not self._closed:
                self._start_next()
        finally:
            self._dispatching = False

    def _start_next(self) -> None:
        item = self._queue.popleft()
        if self._pipeline_paused and not self._queue:
            self._pipeline_paused = False
            self.resume_reading()
        if isinstance(item, _PendingError):
            self._write_refusal(item.status, item.detail, new_request_id())
            return
        self._active = item
        self.phase = BUSY
        try:
            self.state.handler.handle(item)
        except Exception as exc:  # a bug in a handler must not take the connection's peers down
            self.handler_failed(item, exc)

    def handler_failed(self, item: Exchange, exc: Exception) -> None:
        """A bug while handling `item`: log it, answer 500 (or cut a started response)."""
        self.state.log_error("handler failed", exc=exc)
        if not item.response_started:
            item.problem(500, "internal gateway error")
        else:
            self.abort(item, "handler failed")

    def _refuse(self, status: int, detail: str) -> None:
        """Answer a request the parser refused, after any earlier pipelined ones."""
        self._parser = httptools.HttpRequestParser(self)  # never parse this stream again
        self._in_head = False
        exchange, self._exchange = self._exchange, None
        if exchange is not None and exchange is self._active:
            # The request being answered turned bad mid-body (too large, bad chunk).
            self._keep_alive = False
            self.state.log_refusal(self.peer_ip, status, detail)
            if exchange.on_cancel is not None:
                exchange.on_cancel()
                exchange.on_cancel = None
            exchange.body.detach()
            if exchange.response_started:
                self.abort(exchange, detail)
            else:
                exchange.problem(status, detail, title=_ERROR_TITLES.get(status))
            return
        if exchange is not None and exchange in self._queue:
            # Headers were fine but the body was not (too large, bad chunk): drop the request.
            self._queue.remove(exchange)
        if self._active is None and not self._queue:
            self._keep_alive = False
            # Refused while parsing, the client's id may not have been checked yet.
            raw = exchange.request_id if exchange is not None else ""
            request_id = accept_request_id(raw.encode("latin-1")) if raw else new_request_id()
            self._write_refusal(status, detail, request_id)
        else:
            # The answers owed first keep the connection open (no `Connection: close`):
            # the refusal after them is the last response, and it closes.
            self._queue.append(_PendingError(status, detail))
        self.state.log_refusal(self.peer_ip, status, detail)
        self.pause_reading()

    def _write_refusal(self, status: int, detail: str, request_id: str) -> None:
        body = problem_body(
            status, title=_ERROR_TITLES.get(status), detail=detail, request_id=request_id
        )
        head = [
            (b"Content-Type", b"application/problem+json"),
            (b"Content-Length", str(len(body)).encode()),
            (b"X-Request-ID", request_id.encode()),
            (b"Date", date_header.get()),
            (b"Connection", b"close"),
        ]
        hooks = self.state.handler.answer_hooks
        if hooks:  # the global response headers (no route was chosen)
            blank = Exchange(self, 0.0)
            for hook in hooks:
                head = hook(blank, head)
        self._write(status_line(status) + header_block(head) + CRLF + body)
        self._close()

    def _upgrade_requested(self, rest: bytes) -> None:
        # llhttp stops after an upgrade request's head (on_message_complete has run);
        # whatever follows belongs to the new protocol and is replayed only if the
        # upstream agrees. Either way this connection never parses HTTP again.
        self._keep_alive = False
        self._parser = httptools.HttpRequestParser(self)
        upgrading = self._queue[-1] if self._queue else self._active
        if isinstance(upgrading, Exchange) and upgrading.upgrade is not None:
            if upgrading.context is None:
                upgrading.context = {}
            upgrading.context["upgrade_data"] = rest
        self.pause_reading()

    # Reading control (counted: several parties may pause at once) -------------

    def pause_reading(self) -> None:
        self._read_pauses += 1
        if self._read_pauses == 1 and not self._closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        self._read_pauses -= 1
        if self._read_pauses == 0 and not self._closed:
            self.transport.resume_reading()

    # Writing responses -------------------------------------------------------

    def send_continue(self) -> None:
        active = self._active
        if active is not None and not active.response_started and active.version == "1.1":
            self._write(CONTINUE_100)

    def send_informational(
        self, exchange: Exchange, status: int, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """A 1xx from upstream (e.g. 103 Early Hints), for HTTP/1.1 clients only."""
        if exchange is self._active and not exchange.response_started and exchange.version == "1.1":
            self._pending.append(status_line(status) + header_block(headers) + CRLF)

    def send_head(
        self,
        exchange: Exchange,
        status: int,
        reason: bytes | None,
        headers: list[tuple[bytes, bytes]],
        *,
        length: int | None,
        body: bool,
    ) -> None:
        if exchange is not self._active or exchange.response_started:
            return
        exchange.response_started = True
        exchange.status = status
        keep = (
            self._keep_alive
            and exchange.keep_alive
            and exchange.body.complete
            and not self.state.draining
        )
        extra: list[bytes] = []
        if length is not None:
            extra.append(b"Content-Length: %d\r\n" % length)
        if not body:
            framing = _NO_BODY
        elif length is not None:
            framing = _LENGTH
        elif exchange.version == "1.1":
            framing = _CHUNKED
            extra.append(b"Transfer-Encoding: chunked\r\n")
        else:
            framing = _UNTIL_CLOSE
            keep = False
        if not keep:
            extra.append(b"Connection: close\r\n")
        elif exchange.version == "1.0":
            extra.append(b"Connection: keep-alive\r\n")
        self._framing = framing
        self._keep_alive = keep
        if exchange.response_lines:
            extra.append(exchange.response_lines)
        # On every answer, proxied or the gateway's own (the upstream's copy is not relayed);
        # three pieces for the join below rather than two concatenations.
        extra += (_REQUEST_ID, exchange.request_id.encode(), CRLF)
        self._pending.append(
            status_line(status, reason) + header_block(headers) + b"".join(extra) + CRLF
        )

    def send_switching(
        self,
        exchange: Exchange,
        headers: list[tuple[bytes, bytes]],
        tunnel: Tunnel,
        idle_timeout: float | None = None,
    ) -> None:
        """Relay a 101 and from now on pass bytes through to `tunnel` untouched.

        With `idle_timeout`, the sweeper closes the tunnel after that long without a
        byte in either direction (`touch` marks traffic from the far side)."""
        exchange.response_started = True
        exchange.status = 101
        request_id = b"X-Request-ID: " + exchange.request_id.encode() + CRLF
        self._write(status_line(101) + header_block(headers) + request_id + CRLF)
        self._tunnel = tunnel
        self._tunnel_idle = idle_timeout
        if idle_timeout is not None:
            self.phase = TUNNEL
            self.deadline = self.state.loop_time() + idle_timeout
        self._active = None
        self.state.handler.finished(exchange)
        early = exchange.context.pop("upgrade_data", b"") if exchange.context else b""
        if early:
            tunnel.write(early)
        self.resume_reading()

    def send_body(self, exchange: Exchange, data: bytes) -> None:
        if exchange is not self._active or not data:
            return
        exchange.bytes_out += len(data)
        framing = self._framing
        if framing == _CHUNKED:
            self._pending.append(b"%x\r\n" % len(data))
            self._pending.append(data)
            self._pending.append(CRLF)
        elif framing != _NO_BODY:
            self._pending.append(data)

    def flush(self) -> None:
        if self._pending:
            pending = self._pending
            self._pending = []
            self._write(b"".join(pending) if len(pending) > 1 else pending[0])

    def end_response(self, exchange: Exchange) -> None:
        if exchange is not self._active:
            return
        if self._framing == _CHUNKED:
            self._pending.append(LAST_CHUNK)
        self.flush()
        self._active = None
        self.state.handler.finished(exchange)
        if self._closed:
            return
        if not self._keep_alive or not exchange.body.complete:
            # Closing (a body not read to its end cannot be resynchronised). Nothing more
            # is written, not even a refusal queued behind this request: this response
            # said the connection ends (RFC 9112 9.6), or its body runs until the close.
            self._close()
            return
        # A whole body answered unread (a refusal, a 404) may have paused reading while it
        # piled up: nobody will take it now, and the next request must be read.
        exchange.body.detach()
        self._framing = _NO_BODY
        if self._queue:
            self._dispatch()
        else:
            self.phase = IDLE
            self.deadline = self.state.loop_time() + self.state.settings.keepalive_timeout

    def abort(self, exchange: Exchange, reason: str) -> None:
        """The response cannot be finished: close so the client sees it truncated."""
        if exchange is not self._active:
            return
        self.flush()
        self._active = None
        if not exchange.status:
            exchange.status = 502
        self.state.handler.finished(exchange)
        self._close(abort=True)

    async def drain(self) -> None:
        """Wait until the client has taken enough of what was written."""
        if self.write_paused and not self._closed:
            waiter = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def _write(self, data: bytes) -> None:
        if not self._closed:
            self.transport.write(data)

    def _close(self, abort: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        if abort:
            self.transport.abort()
        else:
            self.transport.close()

    def is_current(self, exchange: Exchange) -> bool:
        """Whether `exchange` is still the one being answered (the client may have left)."""
        return exchange is self._active and not self._closed

    @property
    def answer_hooks(self) -> tuple[ResponseHook, ...]:
        return self.state.handler.answer_hooks

    # For the sweeper and shutdown ----------------------------------------------

    @property
    def idle(self) -> bool:
        return self._active is None and not self._queue and not self._in_head

    def touch(self) -> None:
        """Traffic from the far side of a tunnel: it is not idle."""
        if self._tunnel_idle is not None:
            self.deadline = self.state.loop_time() + self._tunnel_idle

    def expire(self) -> None:
        """The connection overstayed its phase's deadline."""
        if self.phase == TUNNEL:
            self._close()  # connection_lost closes the far side too
        elif self.phase == READING_HEAD and self._active is None:
            self._refuse(408, "request head not received in time")
        elif self.idle:
            self._close()

    def close_if_idle(self) -> None:
        if self.idle:
            self._close()

    def force_close(self) -> None:
        self._close(abort=True)


def _parser_message(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return f"malformed request: {text}"


Callback = Callable[[], None]
