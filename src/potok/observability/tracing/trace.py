"""One request's trace context and, when it is sampled, its spans as OTLP bytes.

Everything here runs on the event loop, so it stays small. An unsampled request
(99 % of them at a 1 % ratio) gets a TraceContext: only what leaves the gateway, the
`traceparent` line that goes upstream (its trace id is read back from it for the access
log); it records nothing. A sampled request gets a RequestTrace, which encodes each span
to protobuf as it ends (otlp.py), so what waits for export is bytes; its ids are kept
raw and its span fields that repeat (trace id, parent) encoded once per request.
Call sites on the request path test `trace.sampled` before calling a recording method;
a TraceContext accepts those calls and records nothing.
"""

from __future__ import annotations

import time
from typing import Any

from potok.observability.tracing import otlp
from potok.observability.tracing.context import ID_POOL, SAMPLED_FLAGS, SPAN_AT, TRACE_AT
from potok.observability.tracing.otlp import CLIENT, INTERNAL, SERVER

__all__ = ["CLIENT", "INTERNAL", "SERVER", "RequestTrace", "TraceContext"]

# A call's span: its id (hex, "" when not recorded), the trace context lines it sends,
# its start (ns).
CallSpan = tuple[str, bytes, int]

_now = time.time_ns
_encode = otlp.encode_span
_span = otlp.span
_kind_times = otlp.KIND_TIMES
_NO_STATUS = b""
_LOCAL = otlp.FLAGS_LOCAL_PARENT
_LOCAL_FLAGS = otlp.flags_field(_LOCAL)
_REMOTE_FLAGS = otlp.flags_field(otlp.FLAGS_REMOTE_PARENT)
_take_span = ID_POOL.span
_FLAGS_AT = SPAN_AT + 16  # where a traceparent line's "-00" or "-01" begins
_TRACE_FIELD = b"\x0a\x10"  # Span.trace_id (1), 16 bytes
# A client span as otlp.encode_span writes it: the ScopeSpans.spans tag and two-byte
# length, trace id, span id, parent fields, name, kind and times, attributes, status, flags.
_CLIENT_SPAN = b"\x12%c%c\x0a\x10%s\x12\x08%s%s%s%s%s%s" + _LOCAL_FLAGS


def _state_tail(tracestate: bytes) -> bytes:
    return SAMPLED_FLAGS + b"tracestate: " + tracestate + b"\r\n"


class TraceContext:
    """An unsampled request's trace context: the `traceparent` (and `tracestate`) lines
    it sends upstream. The base of RequestTrace, whose recording methods do nothing here."""

    __slots__ = ("upstream_lines",)

    sampled = False

    def __init__(self, upstream_lines: bytes) -> None:
        self.upstream_lines = upstream_lines

    @property
    def trace_id(self) -> str:
        """32 hex digits (for the access log), from the `traceparent` line."""
        return self.upstream_lines[TRACE_AT : TRACE_AT + 32].decode()

    def begin_attempt(self, method: bytes, target: str, host: str, port: int, resend: int) -> None:
        """A CLIENT span per upstream attempt (retries are visible): recorded when sampled."""

    def attempt_status(self, status: int) -> None:
        pass

    def attempt_error(self, kind: str) -> None:
        pass

    def end_attempt(self) -> None:
        pass

    def begin_call(self) -> CallSpan:
        """A span id for one call of its own (an aggregated route's, several at once)
        and the trace context lines it sends: the request's own when not recorded."""
        return "", self.upstream_lines, 0

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

    def add_span(  # noqa: PLR0917 - as the span it makes
        self,
        name: str,
        kind: int,
        start_ns: int,
        attributes: dict[str, Any],
        error: str | None = None,
        events: tuple[otlp.Event, ...] = (),
    ) -> None:
        """A span for other I/O a policy waited for (a Redis round trip, a JWKS fetch)."""


class RequestTrace(TraceContext):
    """A sampled request: its server span's context and the spans it has recorded."""

    __slots__ = ("_attempt", "ids", "parent_id", "spans", "start_ns", "tracestate", "waiting_since")

    sampled = True

    def __init__(
        self,
        ids: bytes,
        line: bytes,
        parent_id: bytes | None = None,
        tracestate: bytes | None = None,
    ) -> None:
        """`ids`: the trace id's 16 raw bytes, then the server span id's 8; `line`: the
        `traceparent` line of those ids as the pool makes it (flags 00); the caller's
        span id (8 raw bytes) and `tracestate` when the trace continues the caller's."""
        self.start_ns = _now()
        self.ids = ids
        self.parent_id = parent_id
        self.tracestate = tracestate
        # What goes upstream before any attempt span exists (the own API, a pass-through).
        tail = SAMPLED_FLAGS if tracestate is None else _state_tail(tracestate)
        self.upstream_lines = line[:_FLAGS_AT] + tail
        self.spans: list[bytes] = []  # finished spans, encoded
        self.waiting_since = 0  # ns: when a policy began waiting for its I/O (one at a time)
        # [span id, start ns, status, error, method, target, host, port, resend]
        self._attempt: list[Any] | None = None

    def children_parent(self) -> bytes:
        """Span.trace_state and parent_span_id of the server span's children, encoded."""
        return otlp.parent_fields(self.tracestate, self.ids[16:])

    # Upstream attempts (one CLIENT span each) ---------------------------------------

    def begin_attempt(self, method: bytes, target: str, host: str, port: int, resend: int) -> None:
        if self._attempt is not None:
            self.end_attempt()
        span_id, span_hex = _take_span()
        self._attempt = [span_id, _now(), 0, None, method, target, host, port, resend]
        lines = self.upstream_lines  # the trace's line with the new span id (the parent)
        self.upstream_lines = lines[:SPAN_AT] + span_hex + lines[_FLAGS_AT:]

    def attempt_status(self, status: int) -> None:
        if self._attempt is not None:
            self._attempt[2] = status

    def attempt_error(self, kind: str) -> None:
        if self._attempt is not None:
            self._attempt[3] = kind

    def end_attempt(self) -> None:
        attempt = self._attempt
        if attempt is None:
            return
        self._attempt = None
        span_id, start, status, error, method, target, host, port, resend = attempt
        key = (method, target, host, port, status)
        encoded = _ATTEMPTS.get(key) or _attempt_attributes(key)
        if status >= 500 and error is None:
            error = str(status)
        if resend or error is not None:
            encoded += otlp.attributes(
                otlp.ATTRIBUTE, {"http.request.resend_count": resend or None, "error.type": error}
            )
        ids = self.ids
        parent = b"\x22\x08" + ids[16:] if self.tracestate is None else self.children_parent()
        name = _NAMES.get(method) or _name(method)
        times = _kind_times(0x30, CLIENT, 0x39, start, 0x41, _now())
        status_field = _NO_STATUS if error is None else otlp.error_status(error)
        size = len(parent) + len(name) + len(encoded) + len(status_field) + 54
        if 128 <= size < 16384:  # as otlp.encode_span, inline: one %-format
            span = _CLIENT_SPAN % (
                size & 0x7F | 0x80,
                size >> 7,
                ids[:16],
                span_id,
                parent,
                name,
                times,
                encoded,
                status_field,
            )
        else:
            trace_field = _TRACE_FIELD + ids[:16]
            flags = _LOCAL_FLAGS
            span = _encode(trace_field, span_id, parent, name, times, encoded, status_field, flags)
        self.spans.append(span)

    # Calls of their own, several at once (an aggregated route's) ---------------------

    def begin_call(self) -> CallSpan:
        span_hex = _take_span()[1]
        lines = self.upstream_lines
        return span_hex.decode(), lines[:SPAN_AT] + span_hex + lines[_FLAGS_AT:], _now()

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
        if not span[0]:
            return
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
        self._add(_take_span()[1].decode(), name, kind, start_ns, attributes, error, events)

    def _add(  # noqa: PLR0917 - as the span it makes
        self,
        span_hex: str,
        name: str,
        kind: int,
        start_ns: int,
        attributes: dict[str, Any],
        error: str | None,
        events: tuple[otlp.Event, ...] = (),
    ) -> None:
        self.spans.append(
            _span(
                self.ids[:16].hex(),
                span_hex,
                self.ids[16:].hex(),
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


# Encoded attributes of the upstream attempts by (method, target, host, port, status):
# the config's targets times a few methods and statuses; cleared if it ever grows past
# the bound (reloads piling up targets). Span names by method (llhttp's list).
_ATTEMPTS: dict[tuple[bytes, str, str, int, int], bytes] = {}
_NAMES: dict[bytes, bytes] = {}
_MAX_ATTEMPTS = 4096


def _attempt_attributes(key: tuple[bytes, str, str, int, int]) -> bytes:
    method, target, host, port, status = key
    encoded = otlp.attributes(
        otlp.ATTRIBUTE,
        {
            "http.request.method": method.decode("latin-1"),
            "server.address": host,
            "server.port": port,
            "potok.target": target,
            "http.response.status_code": status or None,
        },
    )
    if len(_ATTEMPTS) >= _MAX_ATTEMPTS:
        _ATTEMPTS.clear()
    _ATTEMPTS[key] = encoded
    return encoded


def _name(method: bytes) -> bytes:
    encoded = otlp.name_field(method.decode("latin-1"))
    if len(_NAMES) < 64:
        _NAMES[method] = encoded
    return encoded
