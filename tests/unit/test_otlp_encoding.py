"""The hand-written OTLP encoder (observability/tracing/otlp.py) against the official
schema: every message is decoded with opentelemetry-proto's generated classes, and
re-encoding the decoded message by protobuf itself gives back the same bytes (fields
in number order, nothing unknown, no default left out that must be there)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from google.protobuf.unknown_fields import UnknownFieldSet
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from potok.observability.tracing import otlp

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
PARENT = "b7ad6b7169203331"


def decode(*spans: bytes) -> tuple[ExportTraceServiceRequest, bytes]:
    envelope = otlp.Envelope({"service.name": "potok", "service.instance.id": "h:1"}, "potok", "9")
    body = envelope.request(spans)
    message = ExportTraceServiceRequest.FromString(body)
    return message, body


def only_span(encoded: bytes) -> Span:
    message, body = decode(encoded)
    assert message.SerializeToString() == body
    [resource_spans] = message.resource_spans
    [scope_spans] = resource_spans.scope_spans
    [span] = scope_spans.spans
    assert len(UnknownFieldSet(span)) == 0
    return span


def value_of(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(item) for item in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def span_attributes(span: Span) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in span.attributes}


def test_the_envelope_holds_the_resource_and_scope():
    message, body = decode(otlp.span(TRACE, SPAN, None, "GET", otlp.SERVER, 1, 2, {}))
    assert message.SerializeToString() == body
    [resource_spans] = message.resource_spans
    assert isinstance(resource_spans, ResourceSpans)
    resource = {kv.key: value_of(kv.value) for kv in resource_spans.resource.attributes}
    assert resource == {"service.name": "potok", "service.instance.id": "h:1"}
    [scope_spans] = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == ("potok", "9")


def test_a_batch_of_many_spans_keeps_each():
    spans = [
        otlp.span(TRACE, f"{index + 1:016x}", SPAN, f"s{index}", otlp.CLIENT, 1, index + 2, {})
        for index in range(300)  # lengths over 127: multi-byte varints
    ]
    message, body = decode(*spans)
    assert message.SerializeToString() == body
    decoded = message.resource_spans[0].scope_spans[0].spans
    assert [s.name for s in decoded] == [f"s{index}" for index in range(300)]
    assert decoded[299].span_id.hex() == f"{300:016x}"


def test_every_field_of_a_server_span():
    span = only_span(
        otlp.span(
            TRACE,
            SPAN,
            PARENT,
            "GET all",
            otlp.SERVER,
            1_700_000_000_000_000_000,
            1_700_000_000_123_456_789,
            {"http.request.method": "GET", "http.response.status_code": 503},
            "503",
            flags=otlp.FLAGS_REMOTE_PARENT,
            trace_state=b"vendor=abc,other=1",
        )
    )
    assert span.trace_id.hex() == TRACE
    assert span.span_id.hex() == SPAN
    assert span.parent_span_id.hex() == PARENT
    assert span.trace_state == "vendor=abc,other=1"
    assert span.name == "GET all"
    assert span.kind == Span.SpanKind.SPAN_KIND_SERVER
    assert span.start_time_unix_nano == 1_700_000_000_000_000_000
    assert span.end_time_unix_nano == 1_700_000_000_123_456_789
    assert span_attributes(span) == {
        "http.request.method": "GET",
        "http.response.status_code": 503,
    }
    assert span.status.code == Status.StatusCode.STATUS_CODE_ERROR
    assert span.status.message == "503"
    # W3C sampled flag, and the parent is known to be remote (bits 8 and 9).
    assert span.flags == 0x301


def test_a_root_span_has_no_parent_and_an_unset_status():
    span = only_span(otlp.span(TRACE, SPAN, None, "GET", otlp.SERVER, 5, 6, {}))
    assert span.parent_span_id == b""
    assert not span.HasField("status")
    assert span.status.code == Status.StatusCode.STATUS_CODE_UNSET
    assert span.flags == 0x101
    assert span.trace_state == ""


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (otlp.INTERNAL, Span.SpanKind.SPAN_KIND_INTERNAL),
        (otlp.SERVER, Span.SpanKind.SPAN_KIND_SERVER),
        (otlp.CLIENT, Span.SpanKind.SPAN_KIND_CLIENT),
    ],
)
def test_span_kinds(kind, expected):
    assert only_span(otlp.span(TRACE, SPAN, PARENT, "x", kind, 1, 2, {})).kind == expected


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "",  # an empty string is still a string_value (oneof set)
        "unicode: żółw, 龟, 🐢",
        "x" * 200,  # a length over 127
        True,
        False,
        0,
        1,
        127,
        128,
        2**63 - 1,
        -1,
        -(2**63),
        0.0,
        -2.5,
        1e300,
        [],
        ["a", "b"],
        [1, 2, 3],
        [True, "mixed", 1.5],
        (4, 5),
        b"\x00\xffbytes",
        b"",
    ],
)
def test_attribute_values_round_trip(value):
    span = only_span(otlp.span(TRACE, SPAN, PARENT, "x", otlp.CLIENT, 1, 2, {"k": value}))
    [attribute] = span.attributes
    assert attribute.key == "k"
    expected = list(value) if isinstance(value, tuple) else value
    assert value_of(attribute.value) == expected
    assert type(value_of(attribute.value)) is type(expected)


def test_nan_and_infinity_are_doubles():
    span = only_span(
        otlp.span(TRACE, SPAN, PARENT, "x", otlp.CLIENT, 1, 2, {"a": math.nan, "b": math.inf})
    )
    values = span_attributes(span)
    assert math.isnan(values["a"]) and values["b"] == math.inf


def test_none_values_are_left_out_and_unicode_keys_kept():
    span = only_span(
        otlp.span(TRACE, SPAN, PARENT, "x", otlp.CLIENT, 1, 2, {"gone": None, "clé": "v"})
    )
    assert span_attributes(span) == {"clé": "v"}


def test_a_unicode_span_name_and_status_message():
    span = only_span(otlp.span(TRACE, SPAN, None, "GET /żółw", otlp.SERVER, 1, 2, {}, "błąd"))
    assert span.name == "GET /żółw"
    assert span.status.message == "błąd"


def test_an_empty_error_message_is_still_an_error():
    span = only_span(otlp.span(TRACE, SPAN, None, "x", otlp.SERVER, 1, 2, {}, ""))
    assert span.status.code == Status.StatusCode.STATUS_CODE_ERROR
    assert span.status.message == ""


def test_an_exception_event():
    try:
        raise ValueError("the token's kid is unknown")
    except ValueError as exc:
        event = otlp.exception_event(1_700_000_000_000_000_042, exc)
    span = only_span(
        otlp.span(TRACE, SPAN, PARENT, "auth", otlp.INTERNAL, 1, 2, {}, "bad", events=(event,))
    )
    [decoded] = span.events
    assert decoded.name == "exception"
    assert decoded.time_unix_nano == 1_700_000_000_000_000_042
    assert {kv.key: value_of(kv.value) for kv in decoded.attributes} == {
        "exception.type": "ValueError",
        "exception.message": "the token's kid is unknown",
    }


def test_an_exception_events_type_is_qualified_outside_builtins():
    from potok.identity.verifier import TokenRejected

    _, _, values = otlp.exception_event(1, TokenRejected("expired"))
    assert values["exception.type"] == "potok.identity.verifier.TokenRejected"


def test_events_and_links():
    link = (PARENT * 2, SPAN, "k=v", {"potok.reason": "retry", "n": 2})
    span = only_span(
        otlp.span(
            TRACE,
            SPAN,
            PARENT,
            "x",
            otlp.INTERNAL,
            1,
            2,
            {"a": 1},
            events=((10, "first", {}), (11, "second", {"b": "c"})),
            links=(link, (TRACE, PARENT, "", {})),
        )
    )
    assert [(e.name, e.time_unix_nano) for e in span.events] == [("first", 10), ("second", 11)]
    assert {kv.key: value_of(kv.value) for kv in span.events[1].attributes} == {"b": "c"}
    first, second = span.links
    assert (first.trace_id.hex(), first.span_id.hex(), first.trace_state) == (
        PARENT * 2,
        SPAN,
        "k=v",
    )
    assert {kv.key: value_of(kv.value) for kv in first.attributes} == {
        "potok.reason": "retry",
        "n": 2,
    }
    assert first.flags == 0x101
    assert (second.span_id.hex(), second.trace_state, len(second.attributes)) == (PARENT, "", 0)


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**32, 2**64 - 1, -1])
def test_varints_are_protobufs(value):
    # int_value of an AnyValue: field 3, varint (a negative int64 is ten bytes).
    expected = AnyValue(int_value=value if value < 2**63 else value - 2**64)
    assert b"\x18" + otlp.varint(value) == expected.SerializeToString()


@pytest.mark.parametrize("value", ["", "/a/b", "r-1", "x" * 63])
def test_string_prefixes_and_a_value_are_the_general_encoders_attribute(value):
    for key in ("url.path", "potok.request_id"):
        prefixes = otlp.string_prefixes(key, 63)
        raw = value.encode()
        assert prefixes[len(raw)] + raw == otlp.attributes(otlp.ATTRIBUTE, {key: value})


def test_string_prefixes_refuse_lengths_past_one_byte():
    with pytest.raises(ValueError, match="two-byte lengths"):
        otlp.string_prefixes("k" * 40, 100)


@pytest.mark.parametrize("key_length", [1, 59, 60, 118, 119, 120, 124, 130])
@pytest.mark.parametrize("value", ["", "v" * 60, "w" * 130, 0, 127, 128, 16383, 16384, True])
def test_the_fast_paths_switch_to_the_general_one_at_their_bounds(key_length, value):
    key = "k" * key_length
    span = only_span(otlp.span(TRACE, SPAN, PARENT, "x", otlp.CLIENT, 1, 2, {key: value}))
    assert span_attributes(span) == {key: value}


# The request path's encoder: encode_span and the spans the tracer writes ----------------


@pytest.mark.parametrize(
    ("state", "parent"), [(None, None), (b"k=v", None), (None, PARENT), (b"a=1,b=2", PARENT)]
)
def test_parent_fields_are_the_general_encoders(state, parent):
    fields = otlp.parent_fields(state, bytes.fromhex(parent) if parent else None)
    span = otlp.span(TRACE, SPAN, parent, "n", otlp.CLIENT, 1, 2, {}, trace_state=state)
    head = bytes.fromhex("0a10" + TRACE + "1208" + SPAN)
    assert span[span.index(head) + len(head) :].startswith(fields + otlp.name_field("n"))


def test_a_batch_of_a_thousand_spans_is_one_valid_request():
    spans = [
        otlp.span(TRACE, SPAN, PARENT, f"s{i}", otlp.CLIENT, i + 1, i + 2, {"i": i})
        for i in range(1000)
    ]
    message, body = decode(*spans)
    assert message.SerializeToString() == body
    [resource_spans] = message.resource_spans
    [scope_spans] = resource_spans.scope_spans
    assert [span.name for span in scope_spans.spans] == [f"s{i}" for i in range(1000)]
