"""Per request: continue the caller's trace or start one, sample, and hand finished
sampled traces (already encoded) to the exporter."""

from __future__ import annotations

from os import urandom
from typing import TYPE_CHECKING, Any

from potok.observability.tracing import otlp
from potok.observability.tracing.context import parse_traceparent, random_bits
from potok.observability.tracing.trace import SERVER, RequestTrace

if TYPE_CHECKING:
    from potok.exchange import Exchange
    from potok.observability.tracing.config import TracingConfig
    from potok.observability.tracing.exporter import TraceExporter
    from potok.upstream.forwarded import TrustedProxies

# Ids for this many requests are drawn at once, as one string of hex digits that each
# request slices 48 digits from (trace id, then span id): one `os.urandom` and one
# `hex()` per 512 requests instead of a 192-bit draw and its formatting per request
# (~3,000 instructions of the unsampled request's ~13,500, bench/instructions.sh).
_POOLED = 512
_POOL_END = 48 * _POOLED
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_TRACEPARENT = b"traceparent"
_TRACESTATE = b"tracestate"
_USER_AGENT = b"user-agent"
_LOW64 = (1 << 64) - 1
_random = random_bits
_LENGTHS = frozenset({10, 11})
_NAMES = frozenset({_TRACEPARENT, _TRACESTATE})
_new = object.__new__


def _redraw() -> int:
    """192 bits with neither id all zero (a first draw fails 1 time in 2**64)."""
    while True:
        bits = _random(192)
        if bits > _LOW64 and bits & _LOW64:
            return bits


_encode = otlp.span
_REMOTE = otlp.FLAGS_REMOTE_PARENT
_LOCAL = otlp.FLAGS_LOCAL_PARENT


class Tracer:
    """Built with the runtime from `tracing:`; None on the runtime when tracing is off."""

    __slots__ = ("_accept", "_at", "_bound", "_exporter", "_ids", "_routes", "_trusted")

    def __init__(
        self, config: TracingConfig, exporter: TraceExporter, trusted: TrustedProxies
    ) -> None:
        self._exporter = exporter
        self._trusted = trusted
        self._accept = config.accept_parent
        # Drawn on first use, in the worker that uses it (never shared across a fork).
        self._ids = ""
        self._at = _POOL_END
        # (route, service) -> their attributes, encoded (the config's: bounded).
        self._routes: dict[tuple[str, str], bytes] = {}
        # As OpenTelemetry's TraceIdRatioBased: sampled when the trace id's low 64 bits
        # fall under ratio * 2**64, so every hop with the same ratio decides alike. As
        # 16 hex digits; "g" is above them all (ratio 1).
        bound = round(config.sample_ratio * (1 << 64))
        self._bound = f"{bound:016x}" if bound < 1 << 64 else "g"

    def begin(self, exchange: Exchange) -> RequestTrace:
        """The request's trace; the caller's `traceparent`/`tracestate` are taken out of
        the headers (what goes upstream is the gateway's own).

        Every step counts here (99 % of requests at a 1 % ratio end in this function
        with nothing recorded): only header names of trace context's lengths are lowered,
        and one draw gives both ids."""
        for name, _ in exchange.headers:
            if len(name) in _LENGTHS and name.lower() in _NAMES:
                continued = self._continued(exchange)
                if continued is not None:
                    return continued
                break
        # The trace id's 32 hex digits, then the span id's 16; an all-zero id is invalid.
        at = self._at
        if at == _POOL_END:
            self._ids = urandom(24 * _POOLED).hex()
            at = 0
        self._at = at + 48
        ids = self._ids[at : at + 48]
        trace_id = ids[:32]
        if trace_id == _ZERO_TRACE or ids[32:] == _ZERO_SPAN:  # 1 in 2**64
            ids = f"{_redraw():048x}"
            trace_id = ids[:32]
        # As OpenTelemetry's TraceIdRatioBased, on the trace id's low 64 bits: compared
        # as 16 hex digits, which order as the numbers do.
        if ids[16:32] < self._bound:
            return RequestTrace(trace_id, None, True, None, ids[32:])
        # Not sampled: only what leaves the gateway (the access log's trace id, the
        # upstream's traceparent), without a call to build it.
        trace = _new(RequestTrace)
        trace.trace_id = trace_id
        trace.sampled = False
        trace.upstream_lines = f"traceparent: 00-{trace_id}-{ids[32:]}-00\r\n".encode()
        return trace

    def _continued(self, exchange: Exchange) -> RequestTrace | None:
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
        trace_id, parent_id, sampled = context
        return RequestTrace(trace_id, parent_id, sampled, state)

    def _believes(self, exchange: Exchange) -> bool:
        if self._accept == "always":
            return True
        if self._accept == "never":
            return False
        return self._trusted.contains(exchange.peer_ip)

    def finish(self, exchange: Exchange, trace: RequestTrace, duration: float) -> None:
        """The server span of a sampled trace, encoded, and the trace to the exporter.

        What varies per request (path, request id) is one %-format; what repeats
        (method, scheme, host, status, route; the client's addresses; the user agent)
        is encoded once per distinct value and reused (bounded caches)."""
        trace.end_attempt()
        method = exchange.method
        status = exchange.status
        route = exchange.route_name
        common = (method, exchange.forwarded_proto, exchange.version, exchange.host, status)
        encoded = _COMMON.get(common) or _common(common)
        addresses = (exchange.client_ip, exchange.peer_ip)
        encoded += _ADDRESSES.get(addresses) or _addresses(addresses)
        service = (route, exchange.service_name)  # a split route has several services
        encoded += self._routes.get(service) or self._route(service)
        path = exchange.path
        request_id = exchange.request_id.encode()
        a, b = len(path), len(request_id)
        if (a | b) < 64 and path.isascii():
            p, i = _UNIQUE_CONSTANTS
            encoded += _UNIQUE_TEMPLATE % (p + a, a + 2, a, path, i + b, b + 2, b, request_id)
        else:  # long or not ASCII (bytes read as latin-1 are valid UTF-8 then)
            encoded += otlp.attributes(
                _ATTRIBUTE,
                {"url.path": path.decode("latin-1"), "potok.request_id": exchange.request_id},
            )
        for header, value in exchange.headers:
            if len(header) == 10 and header.lower() == _USER_AGENT:
                encoded += _AGENTS.get(value) or _agent(value)
                break
        parent_id = trace.parent_id
        name = method.decode("latin-1")
        spans = trace.spans
        spans.append(
            _encode(
                trace.trace_id,
                trace.span_id,
                parent_id,
                f"{name} {route}" if route else name,
                SERVER,
                trace.start_ns,
                trace.start_ns + int(duration * 1e9),
                _NO_VALUES,
                str(status) if status >= 500 else None,
                encoded=encoded,
                flags=_LOCAL if parent_id is None else _REMOTE,
                trace_state=trace.tracestate,
            )
        )
        self._exporter.submit(spans)

    def _route(self, key: tuple[str, str]) -> bytes:
        route, service = key
        encoded = self._routes[key] = otlp.attributes(
            _ATTRIBUTE, {"potok.route": route or None, "potok.service": service or None}
        )
        return encoded


_ATTRIBUTE = otlp.ATTRIBUTE
_NO_VALUES: dict[str, Any] = {}
_UNIQUE_TEMPLATE, _UNIQUE_CONSTANTS = otlp.string_template(("url.path", "potok.request_id"))
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
