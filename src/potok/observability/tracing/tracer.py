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
_encode = otlp.span
_REMOTE = otlp.FLAGS_REMOTE_PARENT
_LOCAL = otlp.FLAGS_LOCAL_PARENT


class Tracer:
    """Built with the runtime from `tracing:`; None on the runtime when tracing is off."""

    __slots__ = ("_accept", "_bound", "_exporter", "_trusted")

    def __init__(
        self, config: TracingConfig, exporter: TraceExporter, trusted: TrustedProxies
    ) -> None:
        self._exporter = exporter
        self._trusted = trusted
        self._accept = config.accept_parent
        # As OpenTelemetry's TraceIdRatioBased: sampled when the trace id's low 64 bits
        # fall under ratio * 2**64, so every hop with the same ratio decides alike.
        self._bound = round(config.sample_ratio * (1 << 64))

    def begin(self, exchange: Exchange) -> RequestTrace:
        """The request's trace; the caller's `traceparent`/`tracestate` are taken out of
        the headers (what goes upstream is the gateway's own)."""
        for name, _ in exchange.headers:
            size = len(name)
            if size in {10, 11} and name.lower() in (_TRACEPARENT, _TRACESTATE):
                continued = self._continued(exchange)
                if continued is not None:
                    return continued
                break
        # One draw for both ids: the trace id's 128 bits above the span id's 64 (an
        # all-zero id is invalid: drawn again, 1 time in 2**64).
        bits = _random(192)
        trace_bits = bits >> 64
        while not trace_bits or not bits & _LOW64:
            bits = _random(192)
            trace_bits = bits >> 64
        trace_id = f"{trace_bits:032x}"
        if trace_bits & _LOW64 < self._bound:  # the trace id's low 64 bits
            return RequestTrace(trace_id, None, True, None, f"{bits & _LOW64:016x}")
        # Not sampled: no span id is kept, only the line that carries one upstream.
        return RequestTrace.unsampled(
            trace_id, b"traceparent: 00-%s-%016x-00\r\n" % (trace_id.encode(), bits & _LOW64)
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
        """The server span of a sampled trace, encoded, and the trace to the exporter."""
        trace.end_attempt()
        method = exchange.method.decode("latin-1")
        status = exchange.status
        user_agent = None
        for name, value in exchange.headers:
            if len(name) == 10 and name.lower() == _USER_AGENT:
                user_agent = value.decode("latin-1")
                break
        route = exchange.route_name
        error = str(status) if status >= 500 else None
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.path": exchange.path.decode("latin-1"),
            "url.scheme": (exchange.forwarded_proto or b"http").decode("latin-1"),
            "network.protocol.version": exchange.version,
            "server.address": exchange.host.decode("latin-1"),
            "client.address": exchange.client_ip,
            "network.peer.address": exchange.peer_ip,
            "http.response.status_code": status,
            "potok.request_id": exchange.request_id,
            "user_agent.original": user_agent,
            "potok.route": route or None,
            "potok.service": exchange.service_name or None,
            "error.type": error,
        }
        parent_id = trace.parent_id
        spans = trace.spans
        spans.append(
            _encode(
                trace.trace_id,
                trace.span_id,
                parent_id,
                f"{method} {route}" if route else method,
                SERVER,
                trace.start_ns,
                trace.start_ns + int(duration * 1e9),
                attributes,
                error,
                flags=_LOCAL if parent_id is None else _REMOTE,
                trace_state=trace.tracestate,
            )
        )
        self._exporter.submit(spans)
