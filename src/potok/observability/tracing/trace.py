"""One request's trace: its server span and the child spans of its I/O, as tuples.

Everything here runs on the event loop, so it stays small: ids are random hex
strings, times are `time.time_ns()`, attributes are plain dicts filled once. A
request that is not sampled still gets a trace (its ids go upstream and into the
access log) but records nothing.
"""

from __future__ import annotations

import time
from typing import Any

from potok.observability.tracing.context import new_span_id

INTERNAL = 0  # opentelemetry.trace.SpanKind's values, without importing the API here
SERVER = 1
CLIENT = 2

# (name, kind, span id, parent span id, start ns, end ns, attributes, error or None)
SpanRecord = tuple[str, int, str, str | None, int, int, dict[str, Any], str | None]

# A call's span: its id, the trace context lines it sends, its start (ns).
CallSpan = tuple[str, bytes, int]

_now = time.time_ns


class RequestTrace:
    """The trace context of one request and, when sampled, what it recorded."""

    __slots__ = (
        "_attempt",
        "children",
        "parent_id",
        "sampled",
        "span_id",
        "start_ns",
        "trace_id",
        "tracestate",
        "upstream_lines",
        "waiting_since",
    )

    def __init__(
        self,
        trace_id: str,
        parent_id: str | None,
        sampled: bool,
        tracestate: bytes | None,
        span_id: str = "",
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id or new_span_id()
        self.parent_id = parent_id
        self.sampled = sampled
        self.tracestate = tracestate
        self.start_ns = _now() if sampled else 0
        self.children: list[SpanRecord] = []
        self.waiting_since = 0  # ns: when a policy began waiting for its I/O (one at a time)
        # [span id, start ns, attributes, status, error, method] of the attempt under way
        self._attempt: list[Any] | None = None
        # What goes upstream before any attempt span exists (the own API, a pass-through).
        self.upstream_lines = self._lines(self.span_id)

    def _lines(self, span_id: str) -> bytes:
        flags = "-01\r\n" if self.sampled else "-00\r\n"
        line = ("traceparent: 00-" + self.trace_id + "-" + span_id + flags).encode()
        if self.tracestate is not None:
            line += b"tracestate: " + self.tracestate + b"\r\n"
        return line

    # Upstream attempts (one CLIENT span each: retries are visible) -------------------

    def begin_attempt(self, method: str, target: str, host: str, port: int, resend: int) -> None:
        if not self.sampled:
            return
        self.end_attempt()
        span_id = new_span_id()
        attributes: dict[str, Any] = {
            "server.address": host,
            "server.port": port,
            "potok.target": target,
        }
        if resend:
            attributes["http.request.resend_count"] = resend
        self._attempt = [span_id, _now(), attributes, 0, None, method]
        self.upstream_lines = self._lines(span_id)

    def attempt_status(self, status: int) -> None:
        if self._attempt is not None:
            self._attempt[3] = status

    def attempt_error(self, kind: str) -> None:
        if self._attempt is not None:
            self._attempt[4] = kind

    def end_attempt(self) -> None:
        attempt = self._attempt
        if attempt is None:
            return
        self._attempt = None
        span_id, start, attributes, status, error, method = attempt
        if status:
            attributes["http.response.status_code"] = status
            if status >= 500 and error is None:
                error = str(status)
        if error is not None:
            attributes["error.type"] = error
        attributes["http.request.method"] = method
        self.children.append(
            (method, CLIENT, span_id, self.span_id, start, _now(), attributes, error)
        )

    # Calls of their own, several at once (an aggregated route's): a CLIENT span each ---

    def begin_call(self) -> CallSpan:
        """A span id for one call and the trace context lines it sends (the server
        span's own when not sampled: nothing is recorded then)."""
        if not self.sampled:
            return "", self.upstream_lines, 0
        span_id = new_span_id()
        return span_id, self._lines(span_id), _now()

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
        if not self.sampled or not span[0]:
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
        self.children.append(
            (method, CLIENT, span[0], self.span_id, span[2], _now(), attributes, error)
        )

    # Other I/O a policy waits for (a Redis round trip, a JWKS fetch) -----------------

    def add_span(
        self,
        name: str,
        kind: int,
        start_ns: int,
        attributes: dict[str, Any],
        error: str | None = None,
    ) -> None:
        if self.sampled:
            self.children.append(
                (name, kind, new_span_id(), self.span_id, start_ns, _now(), attributes, error)
            )
