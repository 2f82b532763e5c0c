"""The per-request object: what was asked, where it went, what came back, and when."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from potok.errors import problem_body

if TYPE_CHECKING:
    import asyncio

    from potok.server.body import RequestBody
    from potok.server.connection import ClientConnection


class Producer(Protocol):
    """What feeds a response (an upstream connection): paused while the client lags."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


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
        "target",
        "target_name",
        "timer",
        "upgrade",
        "upstream_duration",
        "upstream_path",
        "version",
    )

    def __init__(self, connection: ClientConnection, started: float) -> None:
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
        self.route: Any = None
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
        self.deadline = started + 30.0  # perf_counter time; the route sets its own
        # Called if the client goes away or the request times out while something works on it.
        self.on_cancel: Callable[[], None] | None = None
        # The transport feeding the response (an upstream connection), paused when the client lags.
        self.producer: Producer | None = None
        # Who is calling, once an authentication policy has decided (None: anonymous).
        self.identity: Any = None
        # Free slot for policies that need to pass something along the pipeline.
        self.context: dict[str, Any] | None = None
        # Header lines (`Name: value\r\n`, rendered) a policy decided at request time that
        # every response to this request carries, whoever sends it (the RateLimit headers):
        # cheaper than a response hook, which would run and format on the way out.
        self.response_lines = b""
        # While a policy holds the request (SUSPENDED): the pipeline's next hook, and on a
        # route whose hooks run in a task, the future that task awaits.
        self.resume_at = 0
        self.resume_waiter: asyncio.Future[None] | None = None

    def header(self, lower_name: bytes) -> bytes | None:
        """First value of a header by lower-case name (a scan: not for the hot path)."""
        for name, value in self.headers:
            if name.lower() == lower_name:
                return value
        return None

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
        hooks = (
            route.pipeline.response_hooks
            if route is not None
            else self.connection.state.handler.answer_hooks
        )
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
        X-Request-ID header is on every answer, see ClientConnection.send_head)."""
        document = problem_body(
            status,
            title=title,
            detail=detail,
            instance=self.path.decode("latin-1"),
            request_id=self.request_id,
            extra=extra,
        )
        self.respond(status, document, b"application/problem+json", headers)
