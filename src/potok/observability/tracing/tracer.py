"""Per request: continue the caller's trace or start one, sample, and hand finished
sampled traces (already encoded) to the exporter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from potok.observability.tracing import otlp
from potok.observability.tracing.context import (
    ID_POOL,
    LINE,
    POOLED,
    TRACE_AT,
    parse_traceparent,
)
from potok.observability.tracing.trace import SERVER, RequestTrace, TraceContext

if TYPE_CHECKING:
    from potok.exchange import Exchange
    from potok.observability.tracing.config import TracingConfig
    from potok.observability.tracing.exporter import TraceExporter
    from potok.upstream.forwarded import TrustedProxies

_TRACEPARENT = b"traceparent"
_TRACESTATE = b"tracestate"
_USER_AGENT = b"user-agent"
_POOL = ID_POOL
_new = object.__new__
_kind_times = otlp.KIND_TIMES
_encode = otlp.encode_span
_NO_STATUS = b""
_TRACE_FIELD = b"\x0a\x10"  # Span.trace_id (1), 16 bytes
_LOCAL_FLAGS = otlp.flags_field(otlp.FLAGS_LOCAL_PARENT)
_REMOTE_FLAGS = otlp.flags_field(otlp.FLAGS_REMOTE_PARENT)


class Tracer:
    """Built with the runtime from `tracing:`; None on the runtime when tracing is off."""

    __slots__ = ("_accept", "_bound", "_exporter", "_names", "_routes", "_trusted")

    def __init__(
        self, config: TracingConfig, exporter: TraceExporter, trusted: TrustedProxies
    ) -> None:
        self._exporter = exporter
        self._trusted = trusted
        self._accept = config.accept_parent
        # (route, service) -> their attributes, encoded (the config's: bounded).
        self._routes: dict[tuple[str, str], bytes] = {}
        # (method, route) -> the server span's name field (bounded likewise).
        self._names: dict[tuple[bytes, str], bytes] = {}
        # As OpenTelemetry's TraceIdRatioBased: sampled when the trace id's low 64 bits
        # fall under ratio * 2**64, so every hop with the same ratio decides alike. As
        # 16 hex digits, which order as the numbers do; "g" is above them all (ratio 1).
        bound = round(config.sample_ratio * (1 << 64))
        self._bound = b"%016x" % bound if bound < 1 << 64 else b"g"

    def begin(self, exchange: Exchange) -> TraceContext:
        """The request's trace; the caller's `traceparent`/`tracestate` are taken out of
        the headers (what goes upstream is the gateway's own).

        Every step counts here (99 % of requests at a 1 % ratio end in this function
        with nothing recorded): the parsers note whether trace context came at all, and
        the line an unsampled request sends upstream is a slice of the id pool's."""
        if exchange.trace_headers:
            continued = self._continued(exchange)
            if continued is not None:
                return continued
        pool = _POOL
        index = pool.next
        if index == POOLED:
            pool.refill()
            index = 0
        pool.next = index + 1
        at = index * LINE
        line = pool.lines[at : at + LINE]
        # The trace id's low 64 bits, as 16 hex digits.
        if line[TRACE_AT + 16 : TRACE_AT + 32] < self._bound:
            return RequestTrace(pool.raw[index * 24 : index * 24 + 24], line)
        trace = _new(TraceContext)
        trace.upstream_lines = line
        return trace

    def _continued(self, exchange: Exchange) -> TraceContext | None:
        """The caller's context if it sent a valid one and is believed; the headers are
        removed either way."""
        parent = state = None
        headers = exchange.headers
        for index in range(len(headers) - 1, -1, -1):
            name = headers[index][0]
            if len(name) == 11 and name.lower() == _TRACEPARENT:
                parent = headers.pop(index)[1]
            elif len(name) == 10 and name.lower() == _TRACESTATE:
                state = headers.pop(index)[1]
        if parent is None or not self._believes(exchange):
            return None
        context = parse_traceparent(parent)
        if context is None:
            return None
        trace_hex, parent_hex, sampled = context
        span_id, span_hex = _POOL.span()
        line = b"traceparent: 00-%s-%s-00\r\n" % (trace_hex.encode(), span_hex)
        if sampled:
            ids = bytes.fromhex(trace_hex) + span_id
            return RequestTrace(ids, line, bytes.fromhex(parent_hex), state)
        if state is not None:
            line += b"tracestate: " + state + b"\r\n"
        return TraceContext(line)

    def _believes(self, exchange: Exchange) -> bool:
        if self._accept == "always":
            return True
        if self._accept == "never":
            return False
        return self._trusted.contains(exchange.peer_ip)

    def finish(self, exchange: Exchange, trace: RequestTrace, duration: float) -> None:
        """The server span of a sampled trace, encoded, and the trace to the exporter.

        What varies per request (path, request id) goes into one %-format with the
        span's other fields; what repeats (method, scheme, host, status, route; the
        client's addresses; the user agent) is encoded once per distinct value and reused
        (bounded caches)."""
        trace.end_attempt()
        method = exchange.method
        status = exchange.status
        route = exchange.route_name
        common = (method, exchange.forwarded_proto, exchange.version, exchange.host, status)
        common_attributes = _COMMON.get(common) or _common(common)
        addresses = (exchange.client_ip, exchange.peer_ip)
        address_attributes = _ADDRESSES.get(addresses) or _addresses(addresses)
        service = (route, exchange.service_name)  # a split route has several services
        route_attributes = self._routes.get(service) or self._route(service)
        agent = b""
        for header, value in exchange.headers:
            if len(header) == 10 and header.lower() == _USER_AGENT:
                agent = _AGENTS.get(value) or _agent(value)
                break
        name_key = (method, route)
        name = self._names.get(name_key) or self._name(name_key)
        start = trace.start_ns
        times = _kind_times(0x30, SERVER, 0x39, start, 0x41, start + int(duration * 1e9))
        status_field = _NO_STATUS if status < 500 else otlp.error_status(str(status))
        ids = trace.ids
        parent_id = trace.parent_id
        if parent_id is None and trace.tracestate is None:
            parent, flags = b"", _LOCAL_FLAGS
        else:
            parent = otlp.parent_fields(trace.tracestate, parent_id)
            flags = _LOCAL_FLAGS if parent_id is None else _REMOTE_FLAGS
        path = exchange.path
        request_id = exchange.request_id.encode()
        a, b = len(path), len(request_id)
        spans = trace.spans
        if (a | b) < 64 and path.isascii():
            p, i = _UNIQUE_CONSTANTS
            size = (
                len(parent)
                + len(name)
                + len(common_attributes)
                + len(address_attributes)
                + len(route_attributes)
                + len(agent)
                + len(status_field)
                + (p + i + a + b + 58)  # the templated attributes; ids, times, flags
            )
            if 128 <= size < 16384:
                spans.append(
                    _SERVER_SPAN
                    % (
                        size & 0x7F | 0x80,
                        size >> 7,
                        ids[:16],
                        ids[16:],
                        parent,
                        name,
                        times,
                        common_attributes,
                        address_attributes,
                        route_attributes,
                        p + a,
                        a + 2,
                        a,
                        path,
                        i + b,
                        b + 2,
                        b,
                        request_id,
                        agent,
                        status_field,
                        flags,
                    )
                )
                self._exporter.submit(spans)
                return
        unique = otlp.attributes(  # long or not ASCII (bytes read as latin-1: valid UTF-8)
            _ATTRIBUTE,
            {"url.path": path.decode("latin-1"), "potok.request_id": exchange.request_id},
        )
        encoded = common_attributes + address_attributes + route_attributes + unique + agent
        spans.append(
            _encode(
                _TRACE_FIELD + ids[:16], ids[16:], parent, name, times, encoded, status_field, flags
            )
        )
        self._exporter.submit(spans)

    def _name(self, key: tuple[bytes, str]) -> bytes:
        method, route = key
        name = method.decode("latin-1")
        encoded = otlp.name_field(f"{name} {route}" if route else name)
        if len(self._names) < _MAX_CACHED:
            self._names[key] = encoded
        return encoded

    def _route(self, key: tuple[str, str]) -> bytes:
        route, service = key
        encoded = self._routes[key] = otlp.attributes(
            _ATTRIBUTE, {"potok.route": route or None, "potok.service": service or None}
        )
        return encoded


_ATTRIBUTE = otlp.ATTRIBUTE
_UNIQUE_TEMPLATE, _UNIQUE_CONSTANTS = otlp.string_template(("url.path", "potok.request_id"))
# A server span whose path and request id are short ASCII, as one %-format: the
# ScopeSpans.spans field's tag and two-byte length, the trace id, span id (tag and
# length), parent, name, kind and times, the cached attributes, the path and request id
# (the template), the user agent, status and flags (otlp.encode_span's layout).
_SERVER_SPAN = b"\x12%c%c\x0a\x10%s\x12\x08%s%s%s%s%s%s%s" + _UNIQUE_TEMPLATE + b"%s%s%s"
# Encoded attributes by the values they repeat, each cache bounded (beyond it a value
# is encoded per request): (method, scheme, version, host, status); (client address,
# peer address); user agents.
_COMMON: dict[tuple[bytes, bytes | None, str, bytes, int], bytes] = {}
_ADDRESSES: dict[tuple[str, str], bytes] = {}
_AGENTS: dict[bytes, bytes] = {}
_MAX_CACHED = 4096


def _common(key: tuple[bytes, bytes | None, str, bytes, int]) -> bytes:
    method, scheme, version, host, status = key
    encoded = otlp.attributes(
        _ATTRIBUTE,
        {
            "http.request.method": method.decode("latin-1"),
            "url.scheme": (scheme or b"http").decode("latin-1"),
            "network.protocol.version": version,
            "server.address": host.decode("latin-1"),
            "http.response.status_code": status,
            "error.type": str(status) if status >= 500 else None,
        },
    )
    if len(_COMMON) < _MAX_CACHED:
        _COMMON[key] = encoded
    return encoded


def _addresses(key: tuple[str, str]) -> bytes:
    client, peer = key
    encoded = otlp.attributes(_ATTRIBUTE, {"client.address": client, "network.peer.address": peer})
    if len(_ADDRESSES) < _MAX_CACHED:
        _ADDRESSES[key] = encoded
    return encoded


def _agent(value: bytes) -> bytes:
    encoded = otlp.attributes(_ATTRIBUTE, {"user_agent.original": value.decode("latin-1")})
    if len(_AGENTS) < _MAX_CACHED:
        _AGENTS[value] = encoded
    return encoded
