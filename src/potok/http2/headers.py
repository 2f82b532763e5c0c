"""HTTP/2 header lists to and from the exchange.

A request's list becomes the same exchange fields the HTTP/1.1 parser fills (RFC 9113
8.3.1: `:authority` is the Host; h2 has already joined `cookie` crumbs, 8.2.3). What
RFC 9113 calls malformed — connection-specific fields (8.2.2), bad pseudo-header fields
(8.3), characters a field may not hold (8.2.1), a Host that differs from `:authority` —
is a stream error (PROTOCOL_ERROR), reported here as `Malformed`; h2's own validation
is off because it makes every such request a connection error, and it is a Python loop
over every character. Header names repeat, so a name checked once is remembered.
"""

from __future__ import annotations

import functools

from hpack import NeverIndexedHeaderTuple

from potok.exchange import Exchange, Headers
from potok.http.host import valid_host
from potok.observability.request_id import accept_request_id, new_request_id


class Malformed(Exception):
    """RFC 9113 8.1.1: a malformed request is a stream error of type PROTOCOL_ERROR."""


class Refused(Exception):
    """A well-formed request the gateway answers itself (400, 405, ...)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


# What to do with a request field, by lower-case name.
(
    _HOST,
    _CL,
    _TE,
    _EXPECT,
    _XFF,
    _XFP,
    _XFH,
    _RID,
    _AUTHORIZATION,
    _PROXY,
    _TRACE,
    _DROP,
    _CONNECTION_SPECIFIC,
) = range(13)
_KINDS: dict[bytes, int] = {
    b"host": _HOST,
    b"content-length": _CL,
    b"te": _TE,
    b"expect": _EXPECT,
    b"x-forwarded-for": _XFF,
    b"x-forwarded-proto": _XFP,
    b"x-forwarded-host": _XFH,
    b"x-request-id": _RID,
    b"authorization": _AUTHORIZATION,
    b"forwarded": _PROXY,
    b"x-real-ip": _PROXY,
    b"traceparent": _TRACE,  # forwarded, and noted for the tracer
    b"tracestate": _TRACE,
    # RFC 9113 8.2.2: a request with any of these is malformed.
    b"connection": _CONNECTION_SPECIFIC,
    b"keep-alive": _CONNECTION_SPECIFIC,
    b"proxy-connection": _CONNECTION_SPECIFIC,
    b"transfer-encoding": _CONNECTION_SPECIFIC,
    b"upgrade": _CONNECTION_SPECIFIC,
    # Hop-by-hop in HTTP/1.1 and meaningless to the upstream.
    b"trailer": _DROP,
    b"proxy-authorization": _DROP,
    b"proxy-authenticate": _DROP,
}


@functools.lru_cache(maxsize=8)
def header_kinds(dropped: frozenset[bytes]) -> dict[bytes, int]:
    """_KINDS plus the gateway-only headers (identity) that no client may supply."""
    return {**dict.fromkeys(dropped, _DROP), **_KINDS}


# RFC 9110 5.6.2 token characters, lower case only (RFC 9113 8.2.1: no upper case).
_NAME_CHARS = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
_GOOD_NAMES: set[bytes] = set()
_GOOD_NAMES_LIMIT = 4096
_PSEUDO = frozenset({b":method", b":scheme", b":path", b":authority"})
# RFC 9110 9.1: a method is a token (either case). Anything else — white space above all —
# would rewrite the request line the HTTP/1.1 upstream reads ("GET /other HTTP/1.1\t...").
_METHOD_CHARS = _NAME_CHARS + b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_GOOD_METHODS: set[bytes] = set()
# RFC 9110 7.1 / RFC 3986: a request target holds no white space, controls or fragment; the
# HTTP/1.1 parser refuses them, and in an upstream request line they would split the target.
_TARGET_CHARS = bytes(b for b in range(256) if b > 0x20 and b not in {0x7F, 0x23})


def _check_name(name: bytes) -> None:
    if name in _GOOD_NAMES:
        return
    if not name or name.translate(None, _NAME_CHARS):
        raise Malformed(f"invalid field name {name[:64]!r}")
    if len(_GOOD_NAMES) >= _GOOD_NAMES_LIMIT:
        _GOOD_NAMES.clear()
    _GOOD_NAMES.add(name)


def _check_value(value: bytes) -> None:
    # RFC 9113 8.2.1: NUL, CR and LF would split the field in an HTTP/1.1 upstream request.
    if 13 in value or 10 in value or 0 in value:
        raise Malformed("a field value holds NUL, CR or LF")
    if value and (value[0] in (32, 9) or value[-1] in (32, 9)):
        raise Malformed("a field value starts or ends with white space")


def apply_request_headers(
    exchange: Exchange, fields: list[tuple[bytes, bytes]], kinds: dict[bytes, int]
) -> None:
    """Fill `exchange` from a request's header list; raises Malformed or Refused."""
    pseudo: dict[bytes, bytes] = {}
    regular = False
    host: bytes | None = None
    headers = exchange.headers
    for name, value in fields:
        if name[:1] == b":":
            if regular:
                raise Malformed("a pseudo-header field after a regular one")
            if name not in _PSEUDO:
                raise Malformed(f"unknown pseudo-header field {name[:32]!r}")
            if name in pseudo:
                raise Malformed(f"{name.decode()} given twice")
            _check_value(value)
            pseudo[name] = value
            continue
        regular = True
        _check_name(name)
        _check_value(value)
        kind = kinds.get(name)
        if kind is None:
            # The underscore twin of a header the gateway owns is dropped like it (see the
            # HTTP/1.1 parser: WSGI and CGI map both to the same variable).
            if 95 not in name or kinds.get(name.replace(b"_", b"-")) is None:
                headers.append((name, value))
        elif kind == _HOST:
            if host is not None:
                raise Malformed("more than one Host field")
            host = value
        elif kind == _CL:
            if not value.isdigit() or exchange.content_length is not None:
                raise Malformed("invalid content-length")
            exchange.content_length = int(value)
        elif kind == _TE:
            if value.lower() != b"trailers":
                raise Malformed("te other than 'trailers'")
        elif kind == _EXPECT:
            if value.lower() != b"100-continue":
                raise Refused(417, "only 'Expect: 100-continue' is supported")
            exchange.expect_continue = True
        elif kind == _XFF:
            previous = exchange.forwarded_for
            exchange.forwarded_for = value if previous is None else previous + b", " + value
        elif kind == _XFP:
            exchange.forwarded_proto = value
        elif kind == _XFH:
            exchange.forwarded_host = value
        elif kind == _RID:
            exchange.request_id = value.decode("latin-1")
        elif kind == _AUTHORIZATION:
            headers.append((name, value))
            if exchange.authorization is None:
                exchange.authorization = value
        elif kind == _PROXY:
            if exchange.proxy_headers is None:
                exchange.proxy_headers = [(name, value)]
            else:
                exchange.proxy_headers.append((name, value))
        elif kind == _TRACE:
            headers.append((name, value))
            exchange.trace_headers = True
        elif kind == _CONNECTION_SPECIFIC:
            raise Malformed(f"connection-specific field {name.decode()!r}")
        # _DROP: hop-by-hop, or set by the gateway only
    _apply_pseudo(exchange, pseudo, host)
    incoming = exchange.request_id
    exchange.request_id = (
        accept_request_id(incoming.encode("latin-1")) if incoming else new_request_id()
    )


def _apply_pseudo(exchange: Exchange, pseudo: dict[bytes, bytes], host: bytes | None) -> None:
    method = pseudo.get(b":method")
    if method is None:
        raise Malformed("no :method")
    if method not in _GOOD_METHODS:
        if not method or method.translate(None, _METHOD_CHARS):
            raise Malformed("invalid :method")
        if len(_GOOD_METHODS) < 64:  # remembered, bounded: a client may send many
            _GOOD_METHODS.add(method)
    exchange.method = method
    if method == b"CONNECT":
        # RFC 9113 8.5 (and RFC 8441's extended CONNECT): a tunnel, which this gateway
        # does not offer over HTTP/2.
        raise Refused(405, "CONNECT is not supported")
    path = pseudo.get(b":path")
    if not path or b":scheme" not in pseudo:
        raise Malformed("no :path or :scheme")
    if path.translate(None, _TARGET_CHARS):
        raise Refused(400, "invalid character in :path")
    authority = pseudo.get(b":authority")
    if authority is not None:
        if host is not None and host != authority:
            raise Malformed("Host differs from :authority")
        host = authority
    if not host:
        raise Refused(400, "request without :authority or Host")
    if not valid_host(host):
        raise Refused(400, "invalid :authority")
    exchange.host = host
    exchange.target = path
    query_at = path.find(b"?")
    if query_at >= 0:
        exchange.path, exchange.query = path[:query_at], path[query_at:]
    else:
        exchange.path = path
    if path[:1] != b"/":
        if method == b"OPTIONS" and path == b"*":
            exchange.path = b"*"
        else:
            raise Refused(400, "request target must be a path")


# Response side ---------------------------------------------------------------------------

# Never sent on HTTP/2 (RFC 9113 8.2.2); content-length is added from the framing.
_RESPONSE_DROPPED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    }
)
# Never in a trailer section (RFC 9110 6.5.1: framing, routing and connection fields).
TRAILER_DROPPED = _RESPONSE_DROPPED | {b"te", b"trailer", b"host", b"content-type"}
# Fields whose value changes with every response: encoded as literals, never entered into
# HPACK's dynamic table (each entry would evict a useful one, and the encoder searches the
# table on every insertion: the most expensive part of sending a response).
_UNIQUE = frozenset({b"date", b"x-request-id", b"etag", b"last-modified", b"set-cookie"})
_STATUS: dict[int, bytes] = {}


def status_bytes(status: int) -> bytes:
    value = _STATUS.get(status)
    if value is None:
        value = _STATUS[status] = b"%d" % status
    return value


def response_headers(
    status: int, headers: Headers, length: int | None, exchange: Exchange
) -> list[tuple[bytes, bytes]]:
    """The h2 header list of a response: lower-case names, no connection-specific fields,
    content-length from the framing, the rate-limit lines and X-Request-ID like HTTP/1.1."""
    fields = [(b":status", status_bytes(status))]
    append = fields.append
    for name, value in headers:
        lower = name.lower()
        if lower in _RESPONSE_DROPPED:
            continue
        if lower in _UNIQUE:
            append(NeverIndexedHeaderTuple(lower, value))
        else:
            append((lower, value))
    if length is not None:
        append((b"content-length", b"%d" % length))
    if exchange.response_lines:
        for line in exchange.response_lines.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if sep:
                append((name.strip().lower(), value.strip()))
    append(NeverIndexedHeaderTuple(b"x-request-id", exchange.request_id.encode()))
    return fields
