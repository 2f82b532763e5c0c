"""The tracer's C recorder (_encode.Trace, as trace.NativeRequestTrace) against the
Python one (trace.PythonRequestTrace): the same spans for the same request, times
aside, and bad arguments refused with an error, never a crash."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from potok.observability.tracing import _encode as native
from potok.observability.tracing import otlp, trace
from potok.observability.tracing.config import TracingConfig
from potok.observability.tracing.context import ID_POOL, POOLED, IdPool
from potok.observability.tracing.tracer import Tracer
from potok.upstream.forwarded import TrustedProxies

FIELDS = (
    b"\x0a\x10" + bytes(range(1, 17)) + b"\x12\x08" + bytes(range(17, 25))
    + b"\x0a\x10" + bytes(range(1, 17)) + b"\x12\x08" + bytes(range(25, 33))
    + b"\x22\x08" + bytes(range(17, 25))
)  # fmt: skip
LINE = b"traceparent: 00-0102030405060708090a0b0c0d0e0f10-191a1b1c1d1e1f20-01\r\n"
PARENT = otlp.parent_fields(b"vendor=abc", bytes(range(40, 48)))
KEY = (b"GET", "orders", "orders-api", 200, b"api.example", None, "1.1")
ADDRESSES = ("192.0.2.7", "10.0.0.2")
HEADERS = [(b"Accept", b"*/*"), (b"USER-agent", b"tests/1")]


class Target:
    name, host, port = "orders-1", "10.1.1.1", 8080


TARGET = Target()
TRACER = Tracer(TracingConfig(enabled=True, sample_ratio=1.0), None, TrustedProxies(()))  # type: ignore[arg-type]


def test_the_c_recorder_is_in_use_here() -> None:
    # .ci/run builds the extension; without it this file fails at its import.
    assert trace.NATIVE and trace.RequestTrace is trace.NativeRequestTrace
    assert issubclass(trace.RequestTrace, native.Trace)
    assert type(trace.new_trace(FIELDS, LINE)) is trace.NativeRequestTrace


def timeless(spans: list[bytes]) -> list[Span]:
    """The spans decoded, their times zeroed (each recorder reads the clock itself)."""
    body = otlp.Envelope({"service.name": "t"}, "potok", "1").request(spans)
    decoded = list(
        ExportTraceServiceRequest.FromString(body).resource_spans[0].scope_spans[0].spans
    )
    for span in decoded:
        assert span.start_time_unix_nano <= span.end_time_unix_nano
        span.start_time_unix_nano = span.end_time_unix_nano = 0
    return decoded


def record(cls: Any, *, continued: bool, attempts: list[dict[str, Any]], **finish: Any) -> Any:
    """A request recorded by `cls`: its attempts (status, error, resend), then finished."""
    recorder = cls(FIELDS, LINE, PARENT, b"vendor=abc") if continued else cls(FIELDS, LINE)
    lines = []
    for attempt in attempts:
        lines.append(recorder.begin_attempt(b"GET", TARGET, attempt.get("resend", 0)))
        recorder.attempt_status = attempt.get("status", 200)
        if "error" in attempt:
            recorder.attempt_error = attempt["error"]
    arguments = {
        "key": KEY,
        "addresses": ADDRESSES,
        "headers": HEADERS,
        "path": b"/orders/42",
        "request_id": "req-1",
        "duration": 0.0025,
    } | finish
    spans = recorder.finish(*arguments.values(), TRACER._described, TRACER)
    return recorder, lines, spans


@pytest.mark.parametrize("continued", [False, True])
@pytest.mark.parametrize(
    ("attempts", "finish"),
    [
        ([{}], {}),
        ([], {}),  # answered before any attempt (a policy refused it)
        ([{"status": 503}, {"resend": 1, "error": "reset", "status": 0}, {"resend": 2}], {}),
        ([{"status": 502}], {"key": (b"POST", "", "", 502, b"h", b"https", "2")}),
        ([{}], {"headers": [], "path": b"/caf\xe9", "request_id": "r" * 200}),
    ],
)
def test_both_recorders_record_the_same_spans(
    continued: bool, attempts: list[dict[str, Any]], finish: dict[str, Any]
) -> None:
    python, python_lines, python_spans = record(
        trace.PythonRequestTrace, continued=continued, attempts=attempts, **finish
    )
    native_trace, native_lines, native_spans = record(
        trace.NativeRequestTrace, continued=continued, attempts=attempts, **finish
    )
    assert len(native_spans) == len(attempts) + 1
    # A retry draws its span id from the pool: the ids differ, the shapes do not.
    for spans in (python_spans, native_spans):
        for span in spans[1:-1]:
            assert len(span) > 0
    got, expected = timeless(native_spans), timeless(python_spans)
    for one in (got, expected):
        for span in one[1:-1]:
            span.span_id = b""
    assert got == expected
    assert native_lines[:1] == python_lines[:1]
    assert native_trace.attempts == python.attempts == len(attempts)
    assert native_trace.attempt is python.attempt is None


def test_the_c_recorders_attributes_are_those_of_the_python_one() -> None:
    recorder = trace.new_trace(FIELDS, LINE)
    python = trace.python_new_trace(FIELDS, LINE)
    for name in trace.PythonRequestTrace.__slots__:
        if name not in {"start_ns", "attempt_method", "attempt_target", "attempt_start",
                        "attempt_resend", "attempt_status", "attempt_error"}:  # fmt: skip
            assert getattr(recorder, name) == getattr(python, name), name
    recorder.waiting_since = 123
    recorder.attempt_error = "timeout"
    assert (recorder.waiting_since, recorder.attempt_error) == (123, "timeout")
    assert recorder.trace_hex == FIELDS[2:18].hex() and recorder.span_hex == FIELDS[20:28].hex()
    with pytest.raises(TypeError):
        recorder.attempt_status = "200"  # type: ignore[assignment]


def test_the_c_recorder_refuses_bad_arguments() -> None:
    recorder = trace.new_trace(FIELDS, LINE)
    described = TRACER._described
    good: list[Any] = [KEY, ADDRESSES, HEADERS, b"/p", "req", 0.001, described, TRACER]
    bad: list[tuple[int, Any, type[Exception]]] = [
        (0, (b"GET",), ValueError),  # a key the tracer cannot describe: its error
        (2, "not a list", TypeError),
        (2, [(b"user-agent",)], TypeError),
        (3, "/str", TypeError),
        (4, b"bytes", TypeError),
        (5, "soon", TypeError),
        (6, [], TypeError),
    ]
    for at, value, error in bad:
        arguments = list(good)
        arguments[at] = value
        with pytest.raises(error):
            recorder.finish(*arguments)
    with pytest.raises(TypeError, match="takes 8 positional arguments"):
        recorder.finish(*good[:7])
    with pytest.raises(TypeError):
        recorder.begin_attempt(b"GET", TARGET, "first")
    with pytest.raises(TypeError):
        native.new_trace("fields", LINE)
    with pytest.raises(TypeError):
        native.Trace(FIELDS, LINE, b"", "state")
    with pytest.raises(TypeError, match="subclass of Trace"):
        native.bind(object, {}, len, {}, len, {}, len, b"", b"flag")
    short = trace.new_trace(FIELDS[:20], LINE)
    with pytest.raises(ValueError):
        short.begin_attempt(b"GET", TARGET, 0)
    with pytest.raises(ValueError):
        short.finish(*good)
    bare = trace.NativeRequestTrace.__new__(trace.NativeRequestTrace)  # no __init__
    with pytest.raises(ValueError):
        bare.begin_attempt(b"GET", TARGET, 0)
    with pytest.raises(ValueError):
        bare.finish(*good)
    for name in ("fields", "spans", "attempt", "start_ns"):  # the recorder's own
        with pytest.raises(AttributeError):
            setattr(recorder, name, None)
    recorder.begin_attempt(b"GET", TARGET, 0)
    del recorder.attempt_error
    with pytest.raises(AttributeError):
        recorder.end_attempt()  # the unusual attempt reads it
    recorder.begin_attempt(b"GET", TARGET, 1)
    # After all that, a good call still records.
    assert len(recorder.finish(*good)) == 2  # the last attempt and the server span


def test_a_full_cache_is_emptied_not_grown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "MAX_CACHED", 2)
    trace._AGENTS.clear()
    for agent in (b"a/1", b"b/1", b"c/1"):
        recorder = trace.new_trace(FIELDS, LINE)
        recorder.finish(KEY, ADDRESSES, [(b"user-agent", agent)], b"/", "r", 0.0, {}, TRACER)
    assert list(trace._AGENTS) == [b"c/1"]
    ID_POOL.empty()


class Exchange:  # what begin reads and sets (by name: an instance dict)
    def __init__(self, trace_headers: bool = False) -> None:
        self.trace_headers = trace_headers
        self.trace_lines = b""
        self.trace: Any = None


class SlottedExchange:  # as potok.exchange.Exchange: slots, which begin uses by offset
    __slots__ = ("trace", "trace_headers", "trace_lines")

    def __init__(self, trace_headers: bool = False) -> None:
        self.trace_headers = trace_headers
        self.trace_lines = b""
        self.trace: Any = None


@pytest.mark.parametrize("exchange_class", [Exchange, SlottedExchange])
def test_both_begins_take_the_same_entries_and_decide_alike(exchange_class: type) -> None:
    from potok.observability.tracing import tracer as tracer_module

    pool = ID_POOL
    native_tracer = Tracer(TracingConfig(enabled=True, sample_ratio=0.5), None, TrustedProxies(()))  # type: ignore[arg-type]
    assert isinstance(native_tracer.begin, native.Begin)
    pool.refill()
    for at in range(POOLED + 8):  # past a refill
        one = exchange_class()
        if at % 2:
            native_tracer.begin(one)
        else:
            native_tracer._begin(one)
        expected_line = pool.lines[pool.next - 1]
        assert one.trace_lines == expected_line
        sampled = bool(pool.sampled[pool.next - 1])
        assert (one.trace is not None) == sampled == expected_line.endswith(b"-01\r\n")
        if sampled:
            assert one.trace.fields == pool.fields(pool.next - 1)
            assert one.trace.line == expected_line
    assert tracer_module._NativeBegin is native.Begin


def test_the_c_begin_hands_trace_context_to_the_tracer() -> None:
    calls = []

    def continued(exchange: Any) -> bool:
        calls.append(exchange)
        return bool(exchange.trace_headers == "continue")

    begin = native.Begin(ID_POOL, continued)
    believed = Exchange(trace_headers="continue")  # type: ignore[arg-type]
    begin(believed)
    assert calls == [believed] and believed.trace_lines == b"" and believed.trace is None
    refused = Exchange(trace_headers=True)
    begin(refused)  # not continued: a trace of the gateway's own
    assert calls[-1] is refused and refused.trace_lines.startswith(b"traceparent: 00-")


def test_the_c_begin_follows_a_class_that_changes_after_it_was_seen() -> None:
    """Slots by offset only while the class is unchanged: a class modified since, another
    class, or one with its own attribute hooks goes by name, as Python would."""

    class Slotted:
        __slots__ = ("trace", "trace_headers", "trace_lines")

        def __init__(self) -> None:
            self.trace_headers, self.trace_lines, self.trace = False, b"", None

    begin = native.Begin(ID_POOL, lambda exchange: False)
    first = Slotted()
    begin(first)  # the layout noted
    assert first.trace_lines.startswith(b"traceparent: 00-")
    begin(Exchange())  # another class between: by name
    seen: list[bytes] = []
    slot = Slotted.trace_lines  # the member descriptor
    Slotted.trace_lines = property(  # type: ignore[assignment]
        slot.__get__, lambda self, value: seen.append(value)
    )
    later = Slotted()  # whose trace_lines the property's setter swallows
    begin(later)
    assert len(seen) == 2 and seen[1].startswith(b"traceparent: 00-")  # __init__'s, begin's
    with pytest.raises(AttributeError):  # the slot itself was never written
        slot.__get__(later)

    class Hooked(SlottedExchange):
        __slots__ = ()

        def __setattr__(self, name: str, value: Any) -> None:
            seen.append(name.encode())
            object.__setattr__(self, name, value)

    hooked = Hooked()
    seen.clear()
    begin(hooked)
    sampled = [b"trace"] if hooked.trace is not None else []  # as the pool decided
    assert seen == [b"trace_lines", *sampled]
    assert hooked.trace_lines.startswith(b"traceparent: 00-")
    unset = SlottedExchange.__new__(SlottedExchange)  # no slot set: as Python, an error
    with pytest.raises(AttributeError, match="trace_headers"):
        begin(unset)
    ID_POOL.empty()


def test_the_c_begin_refuses_what_it_cannot_use() -> None:
    begin = native.Begin(ID_POOL, lambda exchange: False)
    with pytest.raises(TypeError):
        begin()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        begin(Exchange(), Exchange())  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        begin(exchange=Exchange())  # type: ignore[call-arg]
    with pytest.raises(AttributeError):
        begin(object())  # no trace_headers
    with pytest.raises(TypeError):
        native.Begin(object(), len)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        native.Begin(ID_POOL, "not callable")  # type: ignore[arg-type]

    def boom(exchange: Any) -> bool:
        raise ValueError("tracer failed")

    with pytest.raises(ValueError, match="tracer failed"):
        native.Begin(ID_POOL, boom)(Exchange(trace_headers=True))
    broken = IdPool()
    broken.lines, broken.sampled, broken.next = [b"line"], b"", 0  # no decisions
    with pytest.raises(TypeError, match="sampled"):
        native.Begin(broken, len)(Exchange())

    class Dry(IdPool):
        __slots__ = ()

        def refill(self) -> None:  # does not refill
            pass

    dry = Dry()
    with pytest.raises(RuntimeError, match="left it empty"):
        native.Begin(dry, len)(Exchange())
    ID_POOL.empty()
