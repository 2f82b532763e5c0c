"""The tracer's C encoders (_encode.c) against encode.py's Python ones: the same bytes
for the same arguments, and spans the official schema reads back."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from potok.observability.tracing import _encode as native
from potok.observability.tracing import encode, otlp

FIELDS = b"\x0a\x10" + bytes(range(1, 17)) + b"\x12\x08" + bytes(range(17, 25)) + b"...rest"
HEAD = otlp.name_field("GET orders") + b"\x30\x02"
ATTRIBUTES = otlp.attributes(otlp.ATTRIBUTE, {"http.request.method": "GET", "x": 200})
ADDRESSES = otlp.attributes(otlp.ATTRIBUTE, {"client.address": "192.0.2.7"})
AGENT = otlp.attributes(otlp.ATTRIBUTE, {"user_agent.original": "curl/8"})
TAIL = otlp.flags_field(otlp.FLAGS_LOCAL_PARENT)
START = 1_765_000_000_123_456_789


def test_the_c_encoders_are_built_here() -> None:
    # .ci/run installs a compiler and Python's headers: CI tests the C code, not only
    # the fallback (without the extension this file fails at its import, not skips).
    assert encode.NATIVE
    assert encode.server_span is native.server_span


def server_args(**changes: Any) -> list[Any]:
    values: dict[str, Any] = {
        "fields": FIELDS,
        "head": HEAD,
        "start": START,
        "duration": 0.0123456,
        "attributes": ATTRIBUTES,
        "addresses": ADDRESSES,
        "path": b"/orders/42",
        "request_id": "req-1",
        "agent": AGENT,
        "tail": TAIL,
    }
    values.update(changes)
    return list(values.values())


def decoded(span: bytes) -> Span:
    body = otlp.Envelope({"service.name": "t"}, "potok", "1").request([span])
    message = ExportTraceServiceRequest.FromString(body)
    assert message.SerializeToString() == body  # canonical: fields in order, no extras
    return message.resource_spans[0].scope_spans[0].spans[0]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"path": b"/caf\xe9/\xff"},  # Latin-1 bytes: two UTF-8 bytes each
        {"path": b"/" + b"p" * 200, "request_id": "r" * 300},  # two-byte lengths
        {"path": b"", "request_id": "", "agent": b"", "attributes": b"", "addresses": b""},
        {"request_id": "zażółć"},
        {"duration": 0.0},
        {"duration": -1.0},  # never measured so; no time at all rather than an error
        {"attributes": otlp.attributes(otlp.ATTRIBUTE, {"big": "v" * 20_000})},  # 3-byte length
    ],
)
def test_a_server_span_is_the_same_in_c_and_python(changes: dict[str, Any]) -> None:
    args = server_args(**changes)
    span = native.server_span(*args)
    assert span == encode.python_server_span(*args)
    message = decoded(span)
    assert message.trace_id == FIELDS[2:18] and message.span_id == FIELDS[20:28]
    assert message.name == "GET orders" and message.kind == Span.SPAN_KIND_SERVER
    assert message.start_time_unix_nano == START
    duration = max(changes.get("duration", 0.0123456), 0.0)
    assert message.end_time_unix_nano == START + int(duration * 1e9)
    values = {kv.key: kv.value.string_value for kv in message.attributes}
    assert values["url.path"] == args[6].decode("latin-1")
    assert values["potok.request_id"] == args[7]
    assert message.flags == otlp.FLAGS_LOCAL_PARENT


@pytest.mark.parametrize(
    "attributes",
    [b"", ATTRIBUTES, otlp.attributes(otlp.ATTRIBUTE, {"big": "v" * 20_000})],
)
def test_an_attempt_span_is_the_same_in_c_and_python(attributes: bytes) -> None:
    fields = FIELDS[28:] + bytes(38 - len(FIELDS[28:]))
    args = [fields, HEAD, START, START + 5, attributes, otlp.error_status("502") + TAIL]
    span = native.attempt_span(*args)
    assert span == encode.python_attempt_span(*args)
    assert span[0] == 0x12 and span.endswith(TAIL)


@settings(max_examples=200, deadline=None)
@given(
    head=st.binary(max_size=300),
    start=st.integers(0, (1 << 63) - 1),
    duration=st.floats(0, 1e6),
    attributes=st.binary(max_size=300),
    path=st.binary(max_size=300),
    request_id=st.text(max_size=200).filter(
        lambda t: not any(0xD800 <= ord(c) < 0xE000 for c in t)
    ),
)
def test_any_arguments_give_the_same_bytes(
    head: bytes, start: int, duration: float, attributes: bytes, path: bytes, request_id: str
) -> None:
    args = server_args(
        head=head, start=start, duration=duration, attributes=attributes, path=path,
        request_id=request_id,
    )  # fmt: skip
    assert native.server_span(*args) == encode.python_server_span(*args)
    end = start + int(duration * 1e9)
    attempt = [FIELDS, head, start, end, attributes, TAIL]
    assert native.attempt_span(*attempt) == encode.python_attempt_span(*attempt)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="path must be bytes"):
        native.server_span(*server_args(path="/str"))
    with pytest.raises(TypeError, match="request_id must be str"):
        native.server_span(*server_args(request_id=b"bytes"))
    with pytest.raises(TypeError, match="takes 10 positional arguments but 9"):
        native.server_span(*server_args()[:9])
    with pytest.raises(ValueError, match="at least 28 bytes"):
        native.server_span(*server_args(fields=FIELDS[:27]))
    with pytest.raises(OverflowError):
        native.attempt_span(FIELDS, HEAD, -1, 0, b"", TAIL)
    with pytest.raises(OverflowError):
        native.server_span(*server_args(start=(1 << 64) - 10, duration=1.0))
    with pytest.raises(UnicodeEncodeError):  # as str.encode(): a lone surrogate is no UTF-8
        native.server_span(*server_args(request_id="\ud800"))


@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("bound", [b"g", b"0" * 16, b"%016x" % (1 << 62), b"8"])
def test_the_pool_entries_are_the_same_in_c_and_python(dense: bool, bound: bytes) -> None:
    random = os.urandom(32 * 512)
    entries = native.pool_entries(random, dense, bound)
    assert entries == encode.python_pool_entries(random, dense, bound)
    assert entries is not None
    fields, lines, sampled = entries
    assert len(lines) == len(sampled) == 512 and len(fields) == (512 * 66 if dense else 0)
    for line, chosen in zip(lines, sampled, strict=True):
        assert len(line) == 70 and line.endswith(b"-01\r\n" if chosen else b"-00\r\n")
        assert chosen == (line[32:48] < bound)  # the low 64 bits of the trace id


def test_an_all_zero_id_makes_both_pools_draw_again() -> None:
    ids = bytes(range(1, 33))
    for zero in (slice(0, 16), slice(16, 24), slice(24, 32)):  # trace, server, attempt
        random = bytearray(ids * 4)
        random[32 + zero.start : 32 + zero.stop] = bytes(zero.stop - zero.start)
        assert native.pool_entries(bytes(random), True, b"g") is None
        assert encode.python_pool_entries(bytes(random), True, b"g") is None
    # Sixteen zero digits across two ids are no zero id: both keep the pool.
    random = bytes(range(1, 13)) + bytes(8) + bytes(range(1, 13)) + bytes(range(1, 33))
    assert native.pool_entries(random, True, b"g") == encode.python_pool_entries(random, True, b"g")
    assert native.pool_entries(random, True, b"g") is not None
    for pool_entries in (native.pool_entries, encode.python_pool_entries):
        with pytest.raises(ValueError, match="32 bytes an entry"):
            pool_entries(bytes(33), True, b"g")
        with pytest.raises(ValueError, match="1 to 16 hex digits"):
            pool_entries(bytes(32), True, b"")
