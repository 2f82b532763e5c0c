"""One request's trace context and, when it is sampled, its spans as OTLP bytes.

Everything here runs on the event loop, so it stays small. An unsampled request
(99 % of them at a 1 % ratio) gets only what leaves the gateway: its trace id (the
access log) and the `traceparent` line that goes upstream; it records nothing, and the
call sites test `trace.sampled` before calling any recording method. A sampled request
encodes each span to protobuf as it ends (otlp.py), so what waits for export is bytes.
"""

from __future__ import annotations

import time
from typing import Any

from potok.observability.tracing import otlp
from potok.observability.tracing.context import new_span_id
from potok.observability.tracing.otlp import CLIENT, INTERNAL, SERVER

__all__ = ["CLIENT", "INTERNAL", "SERVER", "RequestTrace"]

# A call's span: its id, the trace context lines it sends, its start (ns).
CallSpan = tuple[str, bytes, int]

_now = time.time_ns
_encode = otlp.span
_LOCAL = otlp.FLAGS_LOCAL_PARENT


class RequestTrace:
    """The trace context of one request and, when sampled, what it recorded."""

    __slots__ = (
        "_attempt",
        "parent_id",
        "sampled",
        "span_id",
        "spans",
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
        self.sampled = sampled
        self.tracestate = tracestate
        # What goes upstream before any attempt span exists (the own API, a pass-through).
        self.upstream_lines = self._lines(self.span_id)
        if not sampled:
            return  # the recording slots stay unset: nothing reads them
        self.parent_id = parent_id
        self.start_ns = _now()
        self.spans: list[bytes] = []  # finished child spans, encoded
        self.waiting_since = 0  # ns: when a policy began waiting for its I/O (one at a time)
        # [span id, start ns, status, error, method, target, host, port, resend]
        self._attempt: list[Any] | None = None

    def _lines(self, span_id: str) -> bytes:
        flags = "-01\r\n" if self.sampled else "-00\r\n"
        line = ("traceparent: 00-" + self.trace_id + "-" + span_id + flags).encode()
        if self.tracestate is not None:
            line += b"tracestate: " + self.tracestate + b"\r\n"
        return line

    # Upstream attempts (one CLIENT span each: retries are visible); sampled only ------

    def begin_attempt(self, method: bytes, target: str, host: str, port: int, resend: int) -> None:
        self.end_attempt()
        span_id = new_span_id()
        self._attempt = [span_id, _now(), 0, None, method, target, host, port, resend]
        self.upstream_lines = self._lines(span_id)

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
        encoded = _METHODS.get(method) or _method(method)
        encoded += _TARGETS.get((target, host, port)) or _target(target, host, port)
        if status:
            encoded += _STATUSES.get(status) or _status(status)
            if status >= 500 and error is None:
                error = str(status)
        if resend or error is not None:
            encoded += otlp.attributes(
                otlp.ATTRIBUTE, {"http.request.resend_count": resend or None, "error.type": error}
            )
        self.spans.append(
            _encode(
                self.trace_id,
                span_id,
                self.span_id,
                method.decode("latin-1"),
                CLIENT,
                start,
                _now(),
                _NO_VALUES,
                error,
                encoded=encoded,
                flags=_LOCAL,
                trace_state=self.tracestate,
            )
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
        self.spans.append(
            _encode(
                self.trace_id,
                span[0],
                self.span_id,
                method,
                CLIENT,
                span[2],
                _now(),
                attributes,
                error,
                flags=_LOCAL,
                trace_state=self.tracestate,
            )
        )

    # Other I/O a policy waits for (a Redis round trip, a JWKS fetch); sampled only ----

    def add_span(  # noqa: PLR0917 - as the span it makes
        self,
        name: str,
        kind: int,
        start_ns: int,
        attributes: dict[str, Any],
        error: str | None = None,
        events: tuple[otlp.Event, ...] = (),
    ) -> None:
        self.spans.append(
            _encode(
                self.trace_id,
                new_span_id(),
                self.span_id,
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


# Encoded attributes of the upstream attempts, each set bounded: methods (llhttp's
# list), targets (the config's; cleared if reloads ever pile up more), status codes.
_NO_VALUES: dict[str, Any] = {}
_METHODS: dict[bytes, bytes] = {}
_TARGETS: dict[tuple[str, str, int], bytes] = {}
_STATUSES: dict[int, bytes] = {}
_MAX_TARGETS = 4096


def _method(method: bytes) -> bytes:
    encoded = _METHODS[method] = otlp.attributes(
        otlp.ATTRIBUTE, {"http.request.method": method.decode("latin-1")}
    )
    return encoded


def _target(target: str, host: str, port: int) -> bytes:
    if len(_TARGETS) >= _MAX_TARGETS:
        _TARGETS.clear()
    encoded = _TARGETS[target, host, port] = otlp.attributes(
        otlp.ATTRIBUTE, {"server.address": host, "server.port": port, "potok.target": target}
    )
    return encoded


def _status(status: int) -> bytes:
    encoded = otlp.attributes(otlp.ATTRIBUTE, {"http.response.status_code": status})
    if 100 <= status <= 599:
        _STATUSES[status] = encoded
    return encoded
