"""A sampled request's trace: its spans, encoded to OTLP protobuf as they end.

Everything here runs on the event loop, so it stays small. Only a sampled request has a
RequestTrace (`exchange.trace`); every request of a gateway with tracing on has its trace
context lines (`exchange.trace_lines`, the `traceparent` that goes upstream), which is
all an unsampled request gets (the tracer, tracer.py). Ids come from the id pool
(context.py) already written as the span fields that carry them.
"""

from __future__ import annotations

import time
from typing import Any

from potok.observability.tracing import otlp
from potok.observability.tracing.context import (
    ATTEMPT_FIELDS,
    FLAGS_AT,
    ID_POOL,
    SPAN_AT,
)
from potok.observability.tracing.encode import attempt_span
from potok.observability.tracing.otlp import CLIENT, INTERNAL, SERVER

__all__ = ["CLIENT", "INTERNAL", "SERVER", "RequestTrace"]

# A call's span: its id (hex), the trace context lines it sends, its start (ns).
CallSpan = tuple[str, bytes, int]

_now = time.time_ns
_span = otlp.span
_LOCAL = otlp.FLAGS_LOCAL_PARENT
_LOCAL_FLAGS = otlp.flags_field(_LOCAL)
_POOL = ID_POOL


class RequestTrace:
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
        parent_id: bytes | None = None,
        tracestate: bytes | None = None,
    ) -> None:
        """`fields`: an id pool entry's (FIELDS bytes; its trace id may be the caller's);
        `line`: the sampled `traceparent` (and `tracestate`) lines of its first attempt
        span; the caller's span id (8 raw bytes) and `tracestate` when the trace
        continues the caller's."""
        self.start_ns = _now()
        self.fields = fields
        self.line = line
        self.spans: list[bytes] = []  # finished spans, encoded
        # The open attempt's span fields (None: none is open); its other attempt_* slots
        # are set by begin_attempt, and attempt_status and attempt_error by its caller
        # as the attempt goes (plain stores: a method call costs more than the store).
        self.attempt: bytes | None = None
        self.attempt_status = 0  # the upstream's answer
        self.attempt_error: str | None = None  # what went wrong (error.type)
        self.attempts = 0  # begun so far
        self.waiting_since = 0  # ns: when a policy began waiting for its I/O (one at a time)
        if parent_id is None and tracestate is None:
            self.tracestate = None
            self.parent_fields = b""
        else:
            self.tracestate = tracestate
            # The server span's trace_state and parent_span_id fields (a remote parent).
            self.parent_fields = otlp.parent_fields(tracestate, parent_id)

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
        status = self.attempt_status
        key = (self.attempt_method, self.attempt_target, status)
        head, attributes = _ATTEMPTS.get(key) or _describe_attempt(key)
        error = self.attempt_error
        resend = self.attempt_resend
        tail = _LOCAL_FLAGS  # the common case: everything but ids and times cached
        if resend or error is not None or status >= 500 or self.tracestate is not None:
            if status >= 500 and error is None:
                error = str(status)
            if resend or error is not None:
                extra = {"http.request.resend_count": resend or None, "error.type": error}
                attributes += otlp.attributes(otlp.ATTRIBUTE, extra)
            if self.tracestate is not None:  # Span.trace_state (3) goes between 2 and 4
                fields = fields[:28] + otlp.field(b"\x1a", self.tracestate) + fields[28:]
            tail = otlp.error_status(error) + _LOCAL_FLAGS
        self.spans.append(attempt_span(fields, head, self.attempt_start, _now(), attributes, tail))

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


# The encoded parts of the upstream attempts' spans by (method, target, status): the
# config's targets times a few methods and statuses; cleared if it ever grows past the
# bound (reloads piling up targets).
_ATTEMPTS: dict[tuple[bytes, Any, int], tuple[bytes, bytes]] = {}
_MAX_ATTEMPTS = 4096


def _describe_attempt(key: tuple[bytes, Any, int]) -> tuple[bytes, bytes]:
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
    if len(_ATTEMPTS) >= _MAX_ATTEMPTS:
        _ATTEMPTS.clear()
    described = _ATTEMPTS[key] = (head, attributes)
    return described
