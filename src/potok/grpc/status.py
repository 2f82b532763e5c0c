"""gRPC status codes, and the gateway's own answers shaped as gRPC.

A gRPC client reads the outcome of a call from `grpc-status` (and `grpc-message`), not
from the HTTP status: an answer the gateway makes itself (a 401 from `auth_jwt`, a 429
from `rate_limit`, a 503 while the breaker is open, a 404 for no route) reaches a gRPC
client as a "Trailers-Only" response — HTTP 200, `content-type: application/grpc`, one
HEADERS frame with END_STREAM carrying the status. The codes follow gRPC's own mapping
(doc/http-grpc-status-mapping.md) where the gateway's meaning is plain, and the gRPC
status-code doc otherwise (401 is UNAUTHENTICATED, 403 PERMISSION_DENIED, 504
DEADLINE_EXCEEDED...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from h2.errors import ErrorCodes

if TYPE_CHECKING:
    from potok.exchange import Exchange

OK = 0
CANCELLED = 1
UNKNOWN = 2
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5
ALREADY_EXISTS = 6
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
FAILED_PRECONDITION = 9
ABORTED = 10
OUT_OF_RANGE = 11
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14
DATA_LOSS = 15
UNAUTHENTICATED = 16

NAMES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)

# The gateway's HTTP statuses -> gRPC codes. 400/401/403/404/429/502/503/504 are the
# mapping doc's; the rest say what the gateway meant by them.
_FROM_HTTP = {
    400: INTERNAL,  # the mapping doc's: a malformed request is the client library's bug
    401: UNAUTHENTICATED,
    403: PERMISSION_DENIED,
    404: UNIMPLEMENTED,  # no route: no such method behind this gateway
    405: UNIMPLEMENTED,
    408: DEADLINE_EXCEEDED,  # the request (body) did not arrive in time
    413: RESOURCE_EXHAUSTED,  # a message larger than allowed, as grpc's own max size
    415: INTERNAL,
    422: INVALID_ARGUMENT,
    429: RESOURCE_EXHAUSTED,
    431: RESOURCE_EXHAUSTED,
    499: CANCELLED,
    502: UNAVAILABLE,
    503: UNAVAILABLE,
    504: DEADLINE_EXCEEDED,
    505: INTERNAL,
}


def status_for_http(status: int) -> int:
    """The gRPC code of a gateway answer with HTTP `status` (UNKNOWN for the unlisted)."""
    code = _FROM_HTTP.get(status)
    if code is not None:
        return code
    if 500 <= status < 600:
        return INTERNAL
    return UNKNOWN


# RST_STREAM codes -> gRPC codes (the gRPC over HTTP/2 spec, "Errors").
_FROM_RESET: dict[int, int] = {
    int(ErrorCodes.REFUSED_STREAM): UNAVAILABLE,
    int(ErrorCodes.CANCEL): CANCELLED,
    int(ErrorCodes.ENHANCE_YOUR_CALM): RESOURCE_EXHAUSTED,
    int(ErrorCodes.INADEQUATE_SECURITY): PERMISSION_DENIED,
}


def status_for_reset(code: int) -> int:
    """The gRPC code of a stream reset with `code` before any response."""
    return _FROM_RESET.get(int(code), INTERNAL)


def name(code: int) -> str:
    return NAMES[code] if 0 <= code < len(NAMES) else str(code)


# grpc-message: percent-encoded UTF-8; unreserved is printable ASCII but '%' (the spec).
_KEEP = frozenset(range(0x20, 0x7F)) - {0x25}


def encode_message(text: str) -> bytes:
    return b"".join(bytes((byte,)) if byte in _KEEP else b"%%%02X" % byte for byte in text.encode())


def is_grpc_content_type(value: bytes | None) -> bool:
    """application/grpc, application/grpc+proto, application/grpc;...; not grpc-web."""
    if value is None:
        return False
    value = value.lower()
    return value == b"application/grpc" or value[:17] in (
        b"application/grpc+",
        b"application/grpc;",
    )


def wants_grpc(exchange: Exchange) -> bool:
    """Whether the gateway's own answers to `exchange` must be gRPC-shaped: an HTTP/2
    request that says it is gRPC, on a gRPC route or not (no route: UNIMPLEMENTED). A
    client of another kind on a gRPC route gets problem+json (its 415 says why)."""
    return exchange.version == "2" and is_grpc_content_type(exchange.header(b"content-type"))


def note_status(exchange: Exchange, code: int) -> None:
    """Remember the call's gRPC status for the access log and the metrics."""
    context = exchange.context
    if context is None:
        context = exchange.context = {}
    context["grpc_status"] = code


def grpc_answer(
    exchange: Exchange,
    http_status: int,
    detail: str | None,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """The gateway's answer `http_status` as a gRPC Trailers-Only response."""
    send_status(exchange, status_for_http(http_status), detail, headers)


def send_status(
    exchange: Exchange,
    code: int,
    message: str | None,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """A Trailers-Only response: HTTP 200, `content-type: application/grpc`, and the
    status in the one HEADERS frame that ends the stream. The route's response hooks
    (CORS, security headers, the RateLimit fields) shape it like any answer."""
    note_status(exchange, code)
    head = [
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"%d" % code),
        (b"grpc-message", encode_message(message or name(code))),
        *headers,
    ]
    route = exchange.route
    hooks = route.pipeline.response_hooks if route is not None else exchange.connection.answer_hooks
    for hook in hooks:
        head = hook(exchange, head)
    exchange.send_head(200, head, length=None, body=False)
    exchange.end()
