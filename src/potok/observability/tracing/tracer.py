"""Per request: continue the caller's trace or start one, sample, and hand finished
sampled traces (already encoded) to the exporter."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from potok.observability.tracing import otlp
from potok.observability.tracing.context import parse_traceparent, random_bits
from potok.observability.tracing.trace import SERVER, RequestTrace

if TYPE_CHECKING:
    from potok.exchange import Exchange
    from potok.observability.tracing.config import TracingConfig
    from potok.observability.tracing.exporter import TraceExporter
    from potok.upstream.forwarded import TrustedProxies

_TRACEPARENT = b"traceparent"
_TRACESTATE = b"tracestate"
_USER_AGENT = b"user-agent"
_LOW64 = (1 << 64) - 1
_random = random_bits
_LENGTHS = frozenset({10, 11})
_NAMES = frozenset({_TRACEPARENT, _TRACESTATE})


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

    __slots__ = ("_accept", "_bound", "_exporter", "_routes", "_trusted")

    def __init__(
        self, config: TracingConfig, exporter: TraceExporter, trusted: TrustedProxies
    ) -> None:
        self._exporter = exporter
        self._trusted = trusted
        self._accept = config.accept_parent
        # (route, service) -> their attributes, encoded (the config's routes: bounded).
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
        with nothing recorded): only header names of the right length are lowered (by
        length), and one draw gives both ids."""
        for name, _ in exchange.headers:
            if len(name) in _LENGTHS and name.lower() in _NAMES:
                continued = self._continued(exchange)
                if continued is not None:
                    return continued
                break
        # The trace id's 128 bits above the span id's 64; an all-zero id is invalid.
        bits = _random(192)
        if bits <= _LOW64 or not bits & _LOW64:
            bits = _redraw()
        ids = f"{bits:048x}"
        trace_id = ids[:32]
        # As OpenTelemetry's TraceIdRatioBased, on the trace id's low 64 bits: compared
        # as 16 hex digits, which order as the numbers do.
        if ids[16:32] < self._bound:
            return RequestTrace(trace_id, None, True, None, ids[32:])
        return RequestTrace.unsampled(
            trace_id, b"traceparent: 00-%s-%s-00\r\n" % (trace_id.encode(), ids[32:].encode())
        )

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

        The attributes every request has are one %-format (otlp.string_template); the
        route's, the status's and the user agent's are encoded once and reused."""
        trace.end_attempt()
        method = exchange.method
        path = exchange.path
        scheme = exchange.forwarded_proto or b"http"
        version = exchange.version.encode()
        host = exchange.host
        client = exchange.client_ip.encode()
        peer = exchange.peer_ip.encode()
        request_id = exchange.request_id.encode()
        a, b, c, d = len(method), len(path), len(scheme), len(version)
        e, f, g, h = len(host), len(client), len(peer), len(request_id)
        if (a | b | c | d | e | f | g | h) < 64 and (path + host + scheme).isascii():
            m, p, s, v, o, k, r, i = _SERVER_CONSTANTS
            encoded = _SERVER_TEMPLATE % (
                m + a, a + 2, a, method,
                p + b, b + 2, b, path,
                s + c, c + 2, c, scheme,
                v + d, d + 2, d, version,
                o + e, e + 2, e, host,
                k + f, f + 2, f, client,
                r + g, g + 2, g, peer,
                i + h, h + 2, h, request_id,
            )  # fmt: skip
        else:  # long or not ASCII (bytes read as latin-1 are then valid UTF-8)
            encoded = _server_attributes(method, path, scheme, version, host, client, peer)
            encoded += otlp.attributes(_ATTRIBUTE, {"potok.request_id": exchange.request_id})
        status = exchange.status
        encoded += _STATUS.get(status) or _status(status)
        route = exchange.route_name
        service = exchange.service_name
        encoded += self._routes.get((route, service)) or self._route(route, service)
        for header, value in exchange.headers:
            if len(header) == 10 and header.lower() == _USER_AGENT:
                encoded += _AGENTS.get(value) or _agent(value)
                break
        error = None
        if status >= 500:
            error = str(status)
            encoded += otlp.attributes(_ATTRIBUTE, {"error.type": error})
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
                error,
                encoded=encoded,
                flags=_LOCAL if parent_id is None else _REMOTE,
                trace_state=trace.tracestate,
            )
        )
        self._exporter.submit(spans)

    def _route(self, route: str, service: str) -> bytes:
        encoded = self._routes[route, service] = otlp.attributes(
            _ATTRIBUTE, {"potok.route": route or None, "potok.service": service or None}
        )
        return encoded


_ATTRIBUTE = otlp.ATTRIBUTE
_NO_VALUES: dict[str, Any] = {}
_SERVER_TEMPLATE, _SERVER_CONSTANTS = otlp.string_template(
    (
        "http.request.method",
        "url.path",
        "url.scheme",
        "network.protocol.version",
        "server.address",
        "client.address",
        "network.peer.address",
        "potok.request_id",
    )
)
# Encoded attributes by value, each set bounded: status codes (100-599), user agents
# (the first _MAX_AGENTS seen; others are encoded per request).
_STATUS: dict[int, bytes] = {}
_AGENTS: dict[bytes, bytes] = {}
_MAX_AGENTS = 256


def _status(status: int) -> bytes:
    encoded = otlp.attributes(_ATTRIBUTE, {"http.response.status_code": status})
    if 100 <= status <= 599:
        _STATUS[status] = encoded
    return encoded


def _agent(value: bytes) -> bytes:
    encoded = otlp.attributes(_ATTRIBUTE, {"user_agent.original": value.decode("latin-1")})
    if len(_AGENTS) < _MAX_AGENTS:
        _AGENTS[value] = encoded
    return encoded


def _server_attributes(*values: bytes) -> bytes:
    method, path, scheme, version, host, client, peer = (v.decode("latin-1") for v in values)
    return otlp.attributes(
        _ATTRIBUTE,
        {
            "http.request.method": method,
            "url.path": path,
            "url.scheme": scheme,
            "network.protocol.version": version,
            "server.address": host,
            "client.address": client,
            "network.peer.address": peer,
        },
    )
