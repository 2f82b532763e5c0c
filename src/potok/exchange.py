"""The per-request object: what was asked, where it went, what came back, and when.

`Exchange` talks to the server only through `Responder`, `RequestBody` and `Tunnel`, the
protocols below that the server's classes implement (server/connection.py, server/body.py):
so everything that handles a request (app.py, policies/, upstream/, realtime/) depends
on this module, never on server/. A responder carries many exchanges (HTTP/1.1: one
after another on a connection; HTTP/2 later: interleaved streams on one connection), so
each call about one exchange names it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from potok.errors import problem_body
from potok.grpc.status import grpc_answer, wants_grpc
from potok.http.http11 import first_header

if TYPE_CHECKING:
    import asyncio

    from potok.errors import GatewayError
    from potok.identity.principal import Principal
    from potok.listening import ListenerView
    from potok.observability.tracing.trace import RequestTrace
    from potok.tls.session import TlsInfo

Headers = list[tuple[bytes, bytes]]
ResponseHook = Callable[["Exchange", Headers], Headers]
"""A policy's `on_response`: may change the headers of any answer of its route."""


class Producer(Protocol):
    """What feeds a response (an upstream connection): paused while the client lags."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class BodySink(Protocol):
    """Where request body bytes go once someone wants them (an upstream connection)."""

    def write_body(self, data: bytes) -> None: ...

    def end_body(self) -> None: ...


class Tunnel(Protocol):
    """The far side of an upgraded connection: raw bytes in both directions."""

    def write(self, data: bytes) -> None: ...

    def write_eof(self) -> None: ...

    def close(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class BodyTee(Protocol):
    """A copy of a request body's bytes as they arrive (`RequestBody.tee`)."""

    def take(self, data: bytes) -> None: ...

    def done(self) -> None: ...


class RequestBody(Protocol):
    """A request body as it arrives, for whoever consumes it (server/body.py implements it).

    Either streamed to one `BodySink` (`attach`), read (`read`, `read_all`: the ASGI
    bridge), or looked at whole before it is forwarded (`peek_all`: validation)."""

    received: int  # bytes so far
    complete: bool  # the last byte has arrived
    max_bytes: int  # a policy may lower it; the server refuses a body past it (413)
    tee: BodyTee | None  # sees each chunk as it arrives, whoever consumes it (a mirror)

    def attach(self, sink: BodySink) -> None:
        """Send what is buffered to `sink`, then stream the rest to it."""
        ...

    def detach(self) -> None:
        """Nobody will consume the rest (answered, or the consumer went away)."""
        ...

    async def read(self) -> bytes:
        """The next chunk, or b'' at the end."""
        ...

    async def read_all(self) -> bytes: ...

    async def peek_all(self) -> bytes:
        """The whole body, left in place for the consumer that comes after."""
        ...

    def buffered_bytes(self) -> bytes | None:
        """The whole body if it has arrived and nobody consumed it yet."""
        ...


class Responder(Protocol):
    """What answers exchanges: the server side of one client connection.

    Writes are buffered until `flush` (or the end of the response), so a response head
    and its first body chunk go out in one write."""

    @property
    def peer_ip(self) -> str: ...

    @property
    def listener(self) -> ListenerView:
        """The listener the connection came in on (what it serves, its scheme)."""
        ...

    @property
    def tls(self) -> TlsInfo | None:
        """The TLS handshake's outcome; None on a plain connection. Set once per connection."""
        ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def write_paused(self) -> bool:
        """The client is not taking bytes as fast as they come: producers should pause."""
        ...

    @property
    def transport(self) -> asyncio.Transport:
        """The client's byte stream, for a tunnel once the exchange switched protocols."""
        ...

    @property
    def answer_hooks(self) -> tuple[ResponseHook, ...]:
        """Response hooks for answers given before a route is chosen (global headers)."""
        ...

    def send_head(
        self,
        exchange: Exchange,
        status: int,
        reason: bytes | None,
        headers: Headers,
        *,
        length: int | None,
        body: bool,
    ) -> None: ...

    def send_body(self, exchange: Exchange, data: bytes) -> None: ...

    def end_response(self, exchange: Exchange) -> None: ...

    def abort(self, exchange: Exchange, reason: str) -> None:
        """The response cannot be completed: the client must see it cut short."""
        ...

    def send_informational(self, exchange: Exchange, status: int, headers: Headers) -> None:
        """A 1xx (103 Early Hints) ahead of the response, where the client's version has them."""
        ...

    def send_switching(
        self,
        exchange: Exchange,
        headers: Headers,
        tunnel: Tunnel,
        idle_timeout: float | None = None,
    ) -> None:
        """Answer 101 and from then on pass the client's bytes to `tunnel`."""
        ...

    def touch(self) -> None:
        """Traffic from a tunnel's far side: the tunnel is not idle."""
        ...

    def is_current(self, exchange: Exchange) -> bool:
        """Whether `exchange` is still being answered (the client may have left)."""
        ...

    def handler_failed(self, exchange: Exchange, exc: Exception) -> None:
        """A bug while handling `exchange`: logged, answered 500 or cut short."""
        ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def flush(self) -> None: ...

    async def drain(self) -> None:
        """Wait until the client has taken enough of what was written."""
        ...


class ResponseSink(Protocol):
    """Where a response goes: the exchange (the client) at the end of a chain, or a filter.

    The calls arrive in this order: `send_head` once, `send_body` zero or more times,
    `flush` whenever the upstream has nothing more for now (after each read from it),
    then `end` — or `abort` when the response cannot be completed (the upstream failed
    mid-body). A filter whose client leaves sees neither `end` nor `abort`: it is dropped
    with the request, so it holds nothing that must be closed.
    """

    def send_head(
        self,
        status: int,
        headers: Headers,
        *,
        reason: bytes | None = None,
        length: int | None = None,
        body: bool = True,
    ) -> None: ...

    def send_body(self, data: bytes) -> None: ...

    def flush(self) -> None: ...

    def end(self) -> None: ...

    def abort(self, reason: str) -> None: ...

    def unavailable(self, status: int, breaker_open: bool) -> bool:
        """The upstream cannot answer (the gateway would send `status`: 502, 503, 504),
        before any response byte: a sink that can answer instead (a cache's stale copy,
        RFC 9111 §4.2.4) does so and returns True. The client's end returns False."""
        ...


class RoutePipeline(Protocol):
    """What an exchange needs of its route's pipeline (policies/pipeline.py)."""

    @property
    def response_hooks(self) -> tuple[ResponseHook, ...]: ...

    @property
    def has_response_filters(self) -> bool: ...

    def open_response(self, exchange: Exchange) -> ResponseSink | None: ...


class Resumable(Protocol):
    """What holds a request a policy SUSPENDED (the route's pipeline)."""

    def resume(self, exchange: Exchange, refusal: GatewayError | None = None) -> None: ...


class ChosenRoute(Protocol):
    """What an exchange needs of the route that matched it (runtime.py's `Route`)."""

    @property
    def name(self) -> str: ...

    @property
    def pipeline(self) -> RoutePipeline: ...

    @property
    def tunnel_idle(self) -> float | None: ...


class Exchange:
    """One request and its response on a client connection.

    Header names keep their original case; the fields the gateway acts on
    (host, framing, forwarding, request id) are pulled out while parsing, so
    nothing scans the header list again on the hot path.
    """

    __slots__ = (
        "authorization",
        "body",
        "bytes_in",
        "bytes_out",
        "client_ip",
        "connection",
        "content_length",
        "context",
        "deadline",
        "expect_continue",
        "forwarded_for",
        "forwarded_host",
        "forwarded_proto",
        "headers",
        "host",
        "identity",
        "keep_alive",
        "method",
        "on_cancel",
        "params",
        "path",
        "peer_ip",
        "producer",
        "proxy_headers",
        "query",
        "request_id",
        "response_lines",
        "response_started",
        "resume_at",
        "resume_waiter",
        "route",
        "route_name",
        "service_name",
        "started",
        "status",
        "suspended_in",
        "target",
        "target_name",
        "timer",
        "trace",
        "trace_headers",
        "trace_lines",
        "upgrade",
        "upstream_duration",
        "upstream_path",
        "version",
    )

    def __init__(self, connection: Responder, started: float) -> None:
        self.connection = connection
        self.started = started
        self.method = b"GET"
        self.target = b""
        self.path = b"/"
        self.query = b""
        self.version = "1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.host = b""
        self.content_length: int | None = None
        self.keep_alive = True
        self.expect_continue = False
        self.upgrade: bytes | None = None
        self.forwarded_for: bytes | None = None
        self.forwarded_proto: bytes | None = None
        self.forwarded_host: bytes | None = None
        self.authorization: bytes | None = None  # the first Authorization header's value
        # Forwarded and X-Real-IP as received: forwarded only if the peer is a trusted proxy.
        self.proxy_headers: list[tuple[bytes, bytes]] | None = None
        self.request_id = ""
        self.peer_ip = connection.peer_ip
        self.client_ip = connection.peer_ip
        self.body: RequestBody = None  # type: ignore[assignment]  # set by the connection
        self.route: ChosenRoute | None = None
        self.route_name = ""
        self.service_name = ""
        self.target_name = ""
        self.params: dict[str, str] | None = None
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.response_started = False
        self.upstream_duration: float | None = None
        self.upstream_path = b""
        # The whole-request deadline, cancelled when the exchange finishes.
        self.timer: asyncio.TimerHandle | None = None
        # Tracing on: the trace context lines sent upstream, and the recorder if sampled.
        self.trace_lines = b""
        self.trace: RequestTrace | None = None
        self.trace_headers = False  # the request carries traceparent or tracestate
        self.deadline = started + 30.0  # perf_counter time; the route sets its own
        # Called if the client goes away or the request times out while something works on it.
        self.on_cancel: Callable[[], None] | None = None
        # The transport feeding the response (an upstream connection), paused when the client lags.
        self.producer: Producer | None = None
        # Who is calling, once an authentication policy has decided (None: anonymous).
        self.identity: Principal | None = None
        # Free slot for policies that need to pass something along the pipeline.
        self.context: dict[str, Any] | None = None
        # Header lines (`Name: value\r\n`, rendered) a policy decided at request time that
        # every response to this request carries, whoever sends it (the RateLimit headers):
        # cheaper than a response hook, which would run and format on the way out.
        self.response_lines = b""
        # While a policy holds the request (SUSPENDED): the pipeline holding it, its next
        # hook, and on a route whose hooks run in a task, the future that task awaits.
        self.suspended_in: Resumable | None = None
        self.resume_at = 0
        self.resume_waiter: asyncio.Future[None] | None = None

    @property
    def scheme(self) -> bytes:
        """b"https" on a TLS listener, else b"http" (what the client used to reach the
        gateway; `forwarded_proto` is what a trusted proxy in front says)."""
        return self.connection.listener.scheme

    @property
    def tls(self) -> TlsInfo | None:
        """The connection's TLS session (version, ALPN, verified client certificate)."""
        return self.connection.tls

    def header(self, lower_name: bytes) -> bytes | None:
        """First value of a header by lower-case name: a scan that lower-cases only the
        names of the right length (`http11.first_header`)."""
        return first_header(self.headers, lower_name)

    # The request's progress ------------------------------------------------

    def resume(self, refusal: GatewayError | None = None) -> None:
        """Go on with a request a policy SUSPENDED (policies/base.py): its pipeline runs
        the next hook, or answers `refusal`. Once: a second call finds nothing to resume;
        and nothing happens if the client left meanwhile."""
        pipeline = self.suspended_in
        if pipeline is not None:
            self.suspended_in = None
            pipeline.resume(self, refusal)

    def is_current(self) -> bool:
        """Whether this request is still being answered (the client may have left, or the
        deadline answered it) — checked by whatever resumes it after a wait."""
        return self.connection.is_current(self)

    def handler_failed(self, exc: Exception) -> None:
        """A bug while handling this request: logged, answered 500 (or cut short)."""
        self.connection.handler_failed(self, exc)

    # Reading the request (counted: several parties may pause the client at once) ----

    def pause_reading(self) -> None:
        self.connection.pause_reading()

    def resume_reading(self) -> None:
        self.connection.resume_reading()

    # Responses -------------------------------------------------------------

    def send_head(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        *,
        reason: bytes | None = None,
        length: int | None = None,
        body: bool = True,
    ) -> None:
        self.connection.send_head(self, status, reason, headers, length=length, body=body)

    def send_body(self, data: bytes) -> None:
        self.connection.send_body(self, data)

    def flush(self) -> None:
        """Write what is queued for the client now (the upstream has nothing more yet)."""
        self.connection.flush()

    def end(self) -> None:
        self.connection.end_response(self)

    def abort(self, reason: str) -> None:
        """Drop the client connection: the response cannot be completed."""
        self.connection.abort(self, reason)

    def unavailable(self, status: int, breaker_open: bool) -> bool:
        """(ResponseSink) Nothing to stand in for an unavailable upstream here."""
        return False

    def send_informational(self, status: int, headers: Headers) -> None:
        """A 1xx ahead of the response (103 Early Hints), if the client's version has them."""
        self.connection.send_informational(self, status, headers)

    def switch_protocols(
        self, headers: Headers, tunnel: Tunnel, idle_timeout: float | None = None
    ) -> None:
        """Answer 101 with `headers`; from then on the client's bytes go to `tunnel`, and
        the client's side is `connection.transport`. `idle_timeout`: closed after that
        long without a byte either way."""
        self.connection.send_switching(self, headers, tunnel, idle_timeout)

    async def drain(self) -> None:
        """Wait until the client has taken enough of what was written (flushed first)."""
        connection = self.connection
        connection.flush()
        await connection.drain()

    def respond(
        self,
        status: int,
        body: bytes,
        content_type: bytes,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        """A complete small response made by the gateway itself (an error, a fallback, a
        redirect): it carries the route's response headers (CORS, security headers) like
        a proxied answer, or the global ones before a route is chosen."""
        head = [(b"Content-Type", content_type), *headers]
        route = self.route
        hooks = route.pipeline.response_hooks if route is not None else self.connection.answer_hooks
        for hook in hooks:
            head = hook(self, head)
        include_body = self.method != b"HEAD"
        self.send_head(status, head, length=len(body), body=include_body)
        if include_body and body:
            self.send_body(body)
        self.end()

    def problem(
        self,
        status: int,
        detail: str | None = None,
        *,
        title: str | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        extra: dict[str, object] | None = None,
    ) -> None:
        """Answer with RFC 9457 problem+json carrying the request id (in the document; the
        X-Request-ID header is on every answer, see the server's `send_head`). A gRPC
        call gets the gRPC status instead (grpc/status.py), from any policy or stage."""
        if self.version == "2" and wants_grpc(self):
            grpc_answer(self, status, detail, headers)
            return
        document = problem_body(
            status,
            title=title,
            detail=detail,
            instance=self.path.decode("latin-1"),
            request_id=self.request_id,
            extra=extra,
        )
        self.respond(status, document, b"application/problem+json", headers)
