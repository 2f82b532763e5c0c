"""Per request: continue the caller's trace or start one, sample, and hand finished
sampled traces (already encoded) to the exporter."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from potok.observability.tracing import otlp
from potok.observability.tracing.context import (
    ALL,
    FLAGS_AT,
    ID_POOL,
    POOLED,
    TRACE_AT,
    parse_traceparent,
)
from potok.observability.tracing.trace import (
    MAX_CACHED,
    SERVER,
    Described,
    RequestTrace,
    ServerKey,
    new_trace,
)

if TYPE_CHECKING:
    from potok.exchange import Exchange
    from potok.observability.tracing.config import TracingConfig
    from potok.observability.tracing.exporter import TraceExporter
    from potok.upstream.forwarded import TrustedProxies

try:
    from potok.observability.tracing._encode import Begin as _NativeBegin
except ImportError:  # built without a C compiler
    _NativeBegin = None  # type: ignore[assignment, misc]

_TRACEPARENT = b"traceparent"
_TRACESTATE = b"tracestate"
_POOL = ID_POOL
_SAMPLED_TAIL = b"-01\r\n"
_UNSAMPLED_TAIL = b"-00\r\n"
_LOCAL_FLAGS = otlp.flags_field(otlp.FLAGS_LOCAL_PARENT)
# Below this ratio the pool writes an entry's span fields only when one is sampled.
_DENSE_FROM = 0.05


class Tracer:
    """Built with the runtime from `tracing:`; None on the runtime when tracing is off."""

    __slots__ = ("_accept", "_described", "_exporter", "_trusted", "begin")

    def __init__(
        self, config: TracingConfig, exporter: TraceExporter, trusted: TrustedProxies
    ) -> None:
        self._exporter = exporter
        self._trusted = trusted
        self._accept = config.accept_parent
        # A server span's parts that repeat, by what they depend on (bounded).
        self._described: Described = {}
        # As OpenTelemetry's TraceIdRatioBased: sampled when the trace id's low 64 bits
        # fall under ratio * 2**64, so every hop with the same ratio decides alike. As
        # 16 hex digits, which order as the numbers do; "g" is above them all (ratio 1).
        # The pool decides for each entry when it is drawn.
        bound = round(config.sample_ratio * (1 << 64))
        _POOL.configure(
            b"%016x" % bound if bound < 1 << 64 else ALL, config.sample_ratio >= _DENSE_FROM
        )
        # What every request calls: `_begin`, in C (_encode.Begin: ~1,500 instructions
        # less a request than this Python) when the extension was built.
        self.begin: Callable[[Exchange], None] = (
            self._begin if _NativeBegin is None else _NativeBegin(_POOL, self._continued)
        )

    def _begin(self, exchange: Exchange) -> None:
        """Set the request's trace context lines (what goes upstream: the caller's
        `traceparent`/`tracestate` are taken out of its headers) and, when it is
        sampled, its RequestTrace.

        Every step counts here (99 % of requests at a 1 % ratio end in this function
        with nothing recorded): the parsers note whether trace context came at all, and
        the line an unsampled request sends upstream and the decision are the id
        pool's, made when it was drawn."""
        if exchange.trace_headers and self._continued(exchange):
            return
        pool = _POOL
        index = pool.next
        if index == POOLED:
            pool.refill()
            index = 0
        pool.next = index + 1
        exchange.trace_lines = line = pool.lines[index]
        if not pool.sampled[index]:
            return
        exchange.trace = new_trace(pool.fields(index), line)

    def _continued(self, exchange: Exchange) -> bool:
        """Whether the caller sent a valid trace context and is believed (then the
        request continues it); the caller's lines are removed either way."""
        parent = state = None
        headers = exchange.headers
        for index in range(len(headers) - 1, -1, -1):
            name = headers[index][0]
            if len(name) == 11 and name.lower() == _TRACEPARENT:
                parent = headers.pop(index)[1]
            elif len(name) == 10 and name.lower() == _TRACESTATE:
                state = headers.pop(index)[1]
        if parent is None or not self._believes(exchange):
            return False
        context = parse_traceparent(parent)
        if context is None:
            return False
        trace_hex, parent_hex, sampled = context
        index = _POOL.take()
        fields = _POOL.fields(index)
        trace_id = bytes.fromhex(trace_hex)
        fields = fields[:2] + trace_id + fields[18:30] + trace_id + fields[46:]
        line = _POOL.lines[index]  # the caller's trace id and sampled flag, this span id
        line = line[:TRACE_AT] + trace_hex.encode() + line[TRACE_AT + 32 : FLAGS_AT]
        line += _SAMPLED_TAIL if sampled else _UNSAMPLED_TAIL
        if state is not None:
            line += b"tracestate: " + state + b"\r\n"
        exchange.trace_lines = line
        if sampled:
            parent = otlp.parent_fields(state, bytes.fromhex(parent_hex))
            exchange.trace = RequestTrace(fields, line, parent, state)
        return True

    def _believes(self, exchange: Exchange) -> bool:
        if self._accept == "always":
            return True
        if self._accept == "never":
            return False
        return self._trusted.contains(exchange.peer_ip)

    def finish(self, exchange: Exchange, trace: RequestTrace, duration: float) -> None:
        """The server span of a sampled trace (trace.finish), and the trace to the
        exporter."""
        spans = trace.finish(
            (
                exchange.method,
                exchange.route_name,
                exchange.service_name,
                exchange.status,
                exchange.host,
                exchange.forwarded_proto,
                exchange.version,
            ),
            (exchange.client_ip, exchange.peer_ip),
            exchange.headers,
            exchange.path,
            exchange.request_id,
            duration,
            self._described,
            self,
        )
        self._exporter.submit(spans)

    def describe(self, key: ServerKey) -> tuple[bytes, bytes, bytes]:
        """(name and kind fields, attributes, status and flags fields) of a server span
        of `key`."""
        method_bytes, route, service, status, host, scheme, version = key
        method = method_bytes.decode("latin-1")
        head = otlp.name_field(f"{method} {route}" if route else method)
        head += b"\x30%c" % SERVER  # Span.kind (6)
        attributes = otlp.attributes(
            _ATTRIBUTE,
            {
                "http.request.method": method,
                "url.scheme": (scheme or b"http").decode("latin-1"),
                "network.protocol.version": version,
                "server.address": host.decode("latin-1"),
                "http.response.status_code": status,
                "error.type": str(status) if status >= 500 else None,
                "potok.route": route or None,
                "potok.service": service or None,
            },
        )
        tail = (otlp.error_status(str(status)) if status >= 500 else b"") + _LOCAL_FLAGS
        described = (head, attributes, tail)
        if len(self._described) < MAX_CACHED:
            self._described[key] = described
        return described


_ATTRIBUTE = otlp.ATTRIBUTE
