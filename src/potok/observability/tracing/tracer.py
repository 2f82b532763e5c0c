"""Per request: continue the caller's trace or start one, sample, and hand finished
sampled traces to the exporter."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from potok.observability.tracing.context import new_trace_id, parse_traceparent, random_bits
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
        parent = state = None
        headers = exchange.headers
        for index in range(len(headers) - 1, -1, -1):
            name = headers[index][0]
            if len(name) == 11 and name.lower() == _TRACEPARENT:
                parent = headers.pop(index)[1]
            elif len(name) == 10 and name.lower() == _TRACESTATE:
                state = headers.pop(index)[1]
        context = (
            parse_traceparent(parent) if parent is not None and self._believes(exchange) else None
        )
        if context is not None:
            trace_id, parent_id, sampled = context
            return RequestTrace(trace_id, parent_id, sampled, state)
        # One draw for both ids (a trace id of all zeros is invalid: 1 in 2**128).
        bits = _random(192)
        ids = f"{bits:048x}"
        trace_id = ids[:32] if bits >> 64 else new_trace_id()
        sampled = (bits >> 64) & _LOW64 < self._bound  # the trace id's low 64 bits
        return RequestTrace(trace_id, None, sampled, None, ids[32:] if bits & _LOW64 else "")

    def _believes(self, exchange: Exchange) -> bool:
        if self._accept == "always":
            return True
        if self._accept == "never":
            return False
        return self._trusted.contains(exchange.peer_ip)

    def finish(self, exchange: Exchange, trace: RequestTrace, duration: float) -> None:
        """The server span, recorded with its children if the trace is sampled."""
        if not trace.sampled:
            return
        trace.end_attempt()
        method = exchange.method.decode("latin-1")
        status = exchange.status
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
        }
        for name, value in exchange.headers:
            if len(name) == 10 and name.lower() == _USER_AGENT:
                attributes["user_agent.original"] = value.decode("latin-1")
                break
        route = exchange.route_name
        if route:
            attributes["potok.route"] = route
        if exchange.service_name:
            attributes["potok.service"] = exchange.service_name
        error = str(status) if status >= 500 else None
        if error is not None:
            attributes["error.type"] = error
        span_name = f"{method} {route}" if route else method
        end = trace.start_ns + int(duration * 1e9)
        server = (
            span_name,
            SERVER,
            trace.span_id,
            trace.parent_id,
            trace.start_ns,
            end,
            attributes,
            error,
        )
        self._exporter.submit(trace.trace_id, server, trace.children)
