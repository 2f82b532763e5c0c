"""A sampled request's trace: its spans, encoded to OTLP protobuf as they end.

Everything here runs on the event loop, so it stays small. Only a sampled request has a
RequestTrace (`exchange.trace`); every request of a gateway with tracing on has its trace
context lines (`exchange.trace_lines`, the `traceparent` that goes upstream), which is
all an unsampled request gets (the tracer, tracer.py). Ids come from the id pool
(context.py) already written as the span fields that carry them.

The recorder is here twice, as the encoders are (encode.py): `PythonRequestTrace`, the
reference and what runs where the extension was not built, and `_encode.Trace` (C) with
the same attributes and the three methods every sampled request calls (begin_attempt,
end_attempt, finish), under `NativeRequestTrace`, which adds the Python methods of the
rarer spans (calls, policy I/O) to it. `RequestTrace` is the one in use, `new_trace`
makes one. The tests run both and compare their spans (tests/unit/test_span_recorders.py);
the C recorder saves a sampled request ~8,000 instructions (BENCHMARKS.md, "Tracing").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from potok.observability.tracing import otlp
from potok.observability.tracing.context import (
    ATTEMPT_FIELDS,
    FLAGS_AT,
    ID_POOL,
    SPAN_AT,
)
from potok.observability.tracing.encode import attempt_span, server_span
from potok.observability.tracing.otlp import CLIENT, INTERNAL, SERVER

__all__ = ["CLIENT", "INTERNAL", "SERVER", "RequestTrace", "new_trace"]

# A call's span: its id (hex), the trace context lines it sends, its start (ns).
CallSpan = tuple[str, bytes, int]
# A server span's key: (method, route, service, status, host, scheme, version), and its
# encoded (name and kind fields, attributes, status and flags fields).
ServerKey = tuple[bytes, str, str, int, bytes, "bytes | None", str]
Described = dict[ServerKey, tuple[bytes, bytes, bytes]]


class Describer(Protocol):
    """The tracer: encodes (and caches, bounded) what a server span of a key repeats."""

    def describe(self, key: ServerKey, /) -> tuple[bytes, bytes, bytes]: ...


_now = time.time_ns
_span = otlp.span
_LOCAL = otlp.FLAGS_LOCAL_PARENT
_LOCAL_FLAGS = otlp.flags_field(_LOCAL)
_REMOTE_FLAGS = otlp.flags_field(otlp.FLAGS_REMOTE_PARENT)
_USER_AGENT = b"user-agent"
_POOL = ID_POOL


class _Spans:
    """What both recorders share: the trace's ids and the rarer spans (calls of their
    own, a policy's I/O, an attempt that went wrong), made in Python."""

    __slots__ = ()
    # Set by each recorder (slots or C members).
    fields: bytes
    line: bytes
    spans: list[bytes]
    tracestate: bytes | None
    attempt_error: str | None
    attempt_resend: int
    attempt_status: int

    @property
    def trace_hex(self) -> str:
        return self.fields[2:18].hex()

    @property
    def span_hex(self) -> str:
        """The server span's id (the parent of every other span of the request)."""
        return self.fields[20:28].hex()

    def _new_span(self) -> tuple[bytes, bytes]:
        """A child span's fields 1, 2 and 4 and the trace context lines naming it."""
        index = _POOL.take()
        fields = self.fields
        other = _POOL.fields(index)[46:56]  # [12 08 Y]: another entry's span id field
        lines = _POOL.lines[index][SPAN_AT:FLAGS_AT]
        line = self.line
        return (
            fields[28:46] + other + fields[56:66],
            line[:SPAN_AT] + lines + line[FLAGS_AT:],
        )

    def _unusual_attempt(self, fields: bytes, attributes: bytes) -> tuple[bytes, bytes, bytes]:
        """An attempt's (fields, attributes, tail) when it was a resend, failed, or
        carries a trace state: what end_attempt does not take from its cache."""
        status = self.attempt_status
        error = self.attempt_error
        resend = self.attempt_resend
        if status >= 500 and error is None:
            error = str(status)
        if resend or error is not None:
            extra = {"http.request.resend_count": resend or None, "error.type": error}
            attributes += otlp.attributes(otlp.ATTRIBUTE, extra)
        if self.tracestate is not None:  # Span.trace_state (3) goes between 2 and 4
            fields = fields[:28] + otlp.field(b"\x1a", self.tracestate) + fields[28:]
        return fields, attributes, otlp.error_status(error) + _LOCAL_FLAGS

    # Calls of their own, several at once (an aggregated route's) ---------------------

    def begin_call(self) -> CallSpan:
        """A span id for one call and the trace context lines it sends."""
        fields, line = self._new_span()
        return fields[20:28].hex(), line, _now()

    def end_call(
        self,
        span: CallSpan,
        method: str,
        *,
        target: Any,
        status: int,
        error: str | None,
        resend: int,
    ) -> None:
        """Record the call begun by `begin_call` (`target`: an upstream Target)."""
        attributes: dict[str, Any] = {
            "server.address": target.host,
            "server.port": target.port,
            "potok.target": target.name,
            "http.request.method": method,
        }
        if resend:
            attributes["http.request.resend_count"] = resend
        if status:
            attributes["http.response.status_code"] = status
            if status >= 500 and error is None:
                error = str(status)
        if error is not None:
            attributes["error.type"] = error
        self._add(span[0], method, CLIENT, span[2], attributes, error)

    # Other I/O a policy waits for (a Redis round trip, a JWKS fetch) -----------------

    def add_span(  # noqa: PLR0917 - as the span it makes
        self,
        name: str,
        kind: int,
        start_ns: int,
        attributes: dict[str, Any],
        error: str | None = None,
        events: tuple[otlp.Event, ...] = (),
    ) -> None:
        span_id = self._new_span()[0][20:28].hex()
        self._add(span_id, name, kind, start_ns, attributes, error, events)

    def _add(  # noqa: PLR0917 - as the span it makes
        self,
        span_id: str,
        name: str,
        kind: int,
        start_ns: int,
        attributes: dict[str, Any],
        error: str | None,
        events: tuple[otlp.Event, ...] = (),
    ) -> None:
        self.spans.append(
            _span(
                self.trace_hex,
                span_id,
                self.span_hex,
                name,
                kind,
                start_ns,
                _now(),
                attributes,
                error,
                flags=_LOCAL,
                trace_state=self.tracestate,
                events=events,
            )
        )


class PythonRequestTrace(_Spans):
    """A sampled request: its ids (as span fields), start, and the spans it recorded."""

    __slots__ = (
        "attempt",
        "attempt_error",
        "attempt_method",
        "attempt_resend",
        "attempt_start",
        "attempt_status",
        "attempt_target",
        "attempts",
        "fields",
        "line",
        "parent_fields",
        "spans",
        "start_ns",
        "tracestate",
        "waiting_since",
    )

    def __init__(
        self,
        fields: bytes,
        line: bytes,
        parent_fields: bytes = b"",
        tracestate: bytes | None = None,
    ) -> None:
        """`fields`: an id pool entry's (FIELDS bytes; its trace id may be the caller's);
        `line`: the sampled `traceparent` (and `tracestate`) lines of its first attempt
        span; when the trace continues the caller's, the server span's trace_state and
        parent_span_id fields (otlp.parent_fields) and the caller's `tracestate`."""
        self.start_ns = _now()
        self.fields = fields
        self.line = line
        self.spans: list[bytes] = []  # finished spans, encoded
        # The open attempt's span fields (None: none is open); its other attempt_* slots
        # are set by begin_attempt, and attempt_status and attempt_error by its caller
        # as the attempt goes (plain stores: a method call costs more than the store).
        self.attempt: bytes | None = None
        self.attempt_method = b""
        self.attempt_target: Any = None
        self.attempt_start = 0
        self.attempt_resend = 0
        self.attempt_status = 0  # the upstream's answer
        self.attempt_error: str | None = None  # what went wrong (error.type)
        self.attempts = 0  # begun so far
        self.waiting_since = 0  # ns: when a policy began waiting for its I/O (one at a time)
        self.tracestate = tracestate
        self.parent_fields = parent_fields

    # Upstream attempts (one CLIENT span each: retries are visible) -------------------

    def begin_attempt(self, method: bytes, target: Any, resend: int) -> bytes:
        """Record an attempt on `target` (an upstream Target); the trace context lines
        it sends."""
        if self.attempt is not None:
            self.end_attempt()
        self.attempt_start = _now()
        self.attempt_method = method
        self.attempt_target = target
        self.attempt_resend = resend
        self.attempt_status = 0
        self.attempt_error = None
        self.attempts += 1
        if self.attempts == 1:  # the pool drew its id with the trace's
            self.attempt = self.fields[ATTEMPT_FIELDS]
            return self.line
        self.attempt, line = self._new_span()
        return line

    def end_attempt(self) -> None:
        fields = self.attempt
        if fields is None:
            return
        self.attempt = None
        key = (self.attempt_method, self.attempt_target, self.attempt_status)
        head, attributes = _ATTEMPTS.get(key) or describe_attempt(key)
        tail = _LOCAL_FLAGS  # the common case: everything but ids and times cached
        if (
            self.attempt_resend
            or self.attempt_error is not None
            or self.attempt_status >= 500
            or self.tracestate is not None
        ):
            fields, attributes, tail = self._unusual_attempt(fields, attributes)
        self.spans.append(attempt_span(fields, head, self.attempt_start, _now(), attributes, tail))

    # The request's own span ---------------------------------------------------------

    def finish(  # noqa: PLR0917 - one positional call per sampled request
        self,
        key: ServerKey,
        addresses: tuple[str, str],
        headers: list[tuple[bytes, bytes]],
        path: bytes,
        request_id: str,
        duration: float,
        described: Described,
        tracer: Describer,
    ) -> list[bytes]:
        """End the open attempt, add the server span and return the spans. From the
        exchange: `key` (method, route, service, status, host, scheme, version), the
        (client, peer) `addresses`, its `headers`, `path` and `request_id`; the span
        lasts `duration` s from the start (what the request's metrics say).

        What varies per request (ids, times, path, request id) goes into one call of
        encode.server_span with the rest; what repeats is encoded once per distinct
        value and reused (bounded caches): the name, kind and attributes of a key
        (`described`, filled by `tracer.describe`); the addresses; the user agent. The
        exchange's values come as arguments: the C recorder reads them no faster than
        the bytecode that passes them."""
        if self.attempt is not None:
            self.end_attempt()
        head, attributes, tail = described.get(key) or tracer.describe(key)
        address_attributes = _ADDRESSES.get(addresses) or describe_addresses(addresses)
        agent = b""
        for header, value in headers:
            if len(header) == 10 and header.lower() == _USER_AGENT:
                agent = _AGENTS.get(value) or describe_agent(value)
                break
        parent = self.parent_fields
        if parent:  # continued: the caller's span is the parent, its tracestate goes on
            head = parent + head  # trace_state (3) and parent_span_id (4) before name (5)
            tail = tail[:-4] + _REMOTE_FLAGS[-4:]
        self.spans.append(
            server_span(
                self.fields,
                head,
                self.start_ns,
                duration,
                attributes,
                address_attributes,
                path,
                request_id,
                agent,
                tail,
            )
        )
        return self.spans


# Encoded parts that repeat, by the values they depend on, each cache bounded (cleared
# when full: reloads piling up targets): an upstream attempt's name and kind fields and
# attributes by (method, target, status); (client address, peer address); user agents.
_ATTEMPTS: dict[tuple[bytes, Any, int], tuple[bytes, bytes]] = {}
_ADDRESSES: dict[tuple[str, str], bytes] = {}
_AGENTS: dict[bytes, bytes] = {}
MAX_CACHED = 4096
_K = TypeVar("_K")
_V = TypeVar("_V")


def describe_attempt(key: tuple[bytes, Any, int]) -> tuple[bytes, bytes]:
    """(name and kind fields, attributes) of an attempt."""
    method, target, status = key
    head = otlp.name_field(method.decode("latin-1")) + b"\x30%c" % CLIENT  # Span.kind (6)
    attributes = otlp.attributes(
        otlp.ATTRIBUTE,
        {
            "http.request.method": method.decode("latin-1"),
            "server.address": target.host,
            "server.port": target.port,
            "potok.target": target.name,
            "http.response.status_code": status or None,
        },
    )
    return _cached(_ATTEMPTS, key, (head, attributes))


def describe_addresses(key: tuple[str, str]) -> bytes:
    client, peer = key
    encoded = otlp.attributes(
        otlp.ATTRIBUTE, {"client.address": client, "network.peer.address": peer}
    )
    return _cached(_ADDRESSES, key, encoded)


def describe_agent(value: bytes) -> bytes:
    encoded = otlp.attributes(otlp.ATTRIBUTE, {"user_agent.original": value.decode("latin-1")})
    return _cached(_AGENTS, value, encoded)


def _cached(cache: dict[_K, _V], key: _K, value: _V) -> _V:
    if len(cache) >= MAX_CACHED:
        cache.clear()
    cache[key] = value
    return value


def python_new_trace(fields: bytes, line: bytes) -> PythonRequestTrace:
    """The RequestTrace of a trace of the gateway's own: as PythonRequestTrace(fields,
    line), set here (the class's call costs as much again as the stores)."""
    trace = _new(PythonRequestTrace)
    trace.start_ns = _now()
    trace.fields = fields
    trace.line = line
    trace.spans = []
    trace.tracestate = None
    trace.parent_fields = b""
    trace.waiting_since = 0
    trace.attempt = None
    trace.attempts = 0
    return trace


_new = object.__new__
new_trace: Callable[[bytes, bytes], PythonRequestTrace] = python_new_trace
try:
    from potok.observability.tracing import _encode
except ImportError:  # built without a C compiler
    NATIVE = False
else:
    NATIVE = True

    class NativeRequestTrace(_encode.Trace, _Spans):
        """The C recorder with the Python methods of the rarer spans."""

        __slots__ = ()

    _encode.bind(
        NativeRequestTrace,
        _ATTEMPTS,
        describe_attempt,
        _ADDRESSES,
        describe_addresses,
        _AGENTS,
        describe_agent,
        _LOCAL_FLAGS,
        _REMOTE_FLAGS,
    )
    new_trace = _encode.new_trace  # type: ignore[assignment]

if TYPE_CHECKING:  # one interface, whichever recorder runs
    RequestTrace = PythonRequestTrace
else:
    RequestTrace = NativeRequestTrace if NATIVE else PythonRequestTrace
