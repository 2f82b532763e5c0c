"""OTLP's `ExportTraceServiceRequest` written as protobuf bytes by hand, for the few span
shapes Potok makes.

Why not the SDK (`ReadableSpan` and its OTLP encoder) or generated message classes:
the SDK's path cost ~885,000 instructions per request at 100 % sampling (BENCHMARKS.md),
five times what proxying the request costs. A span here is encoded once, when it ends,
straight to the bytes of its `ScopeSpans.spans` field: a few bytes.fromhex/struct calls
and one concatenation per attribute, with every attribute key's bytes made once. A
batch is then the resource and scope (encoded once per exporter) and a join.

The wire format (https://protobuf.dev/programming-guides/encoding/) and the schema
(opentelemetry-proto, opentelemetry/proto/trace/v1/trace.proto and common/v1/common.proto)
are checked by tests/unit/test_otlp_encoding.py, which decodes the output with the
official generated classes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Span.kind: OTLP's enum (SPAN_KIND_INTERNAL = 1, SERVER = 2, CLIENT = 3).
INTERNAL = 1
SERVER = 2
CLIENT = 3
# Status.code: STATUS_CODE_ERROR (UNSET is the absent Status; Potok never sets OK).
_STATUS_ERROR = b"\x18\x02"
# Span.flags: the W3C trace flags (sampled) and whether the parent is remote (bits 8, 9).
FLAGS_LOCAL_PARENT = 0x101
FLAGS_REMOTE_PARENT = 0x301

# An event or a link: (time ns, name, attributes) and (trace id hex, span id hex,
# trace state or "", attributes).
Event = tuple[int, str, Mapping[str, Any]]
Link = tuple[str, str, str, Mapping[str, Any]]

_U64 = (1 << 64) - 1
_SMALL = [bytes((n,)) for n in range(128)]
# kind (field 6, varint), start (7, fixed64), end (8, fixed64)
_KIND_TIMES = struct.Struct("<BBBQBQ").pack
_FLAGS = struct.Struct("<2sI").pack  # flags (16, fixed32): tag 0x85 0x01
_DOUBLE = struct.Struct("<Bd").pack  # AnyValue.double_value (4, fixed64)
_EVENT_TIME = struct.Struct("<BQ").pack  # Event.time_unix_nano (1, fixed64)
_LINK_FLAGS = struct.Struct("<BI").pack  # Link.flags (6, fixed32)
_FLAG_FIELDS = {flags: _FLAGS(b"\x85\x01", flags) for flags in (0x101, 0x301)}
_TRUE = b"\x10\x01"  # AnyValue.bool_value (2)
_FALSE = b"\x10\x00"


def varint(value: int) -> bytes:
    """Base-128, least significant group first; a negative int64 as its two's
    complement (ten bytes), as protobuf writes int64."""
    if 0 <= value < 128:
        return _SMALL[value]
    value &= _U64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    size = len(payload)
    return tag + (_SMALL[size] if size < 128 else varint(size)) + payload


# Attributes -----------------------------------------------------------------------------

# A KeyValue's key field (1), by key: made once per key for the life of the process.
_keys: dict[str, bytes] = {}


def _key(key: str) -> bytes:
    found = _keys.get(key)
    if found is None:
        found = _keys[key] = field(b"\x0a", key.encode())
    return found


def any_value(value: Any) -> bytes:
    """An AnyValue message. bool before int (a bool is an int); a list or tuple is an
    ArrayValue; bytes are bytes_value; anything else is written as its str()."""
    kind = type(value)
    if kind is str:
        return field(b"\x0a", value.encode())
    if kind is bool:
        return _TRUE if value else _FALSE
    if kind is int:
        return b"\x18" + varint(value)
    if kind is float:
        return _DOUBLE(0x21, value)
    if kind is list or kind is tuple:
        return field(b"\x2a", b"".join([field(b"\x0a", any_value(item)) for item in value]))
    if kind is bytes:
        return field(b"\x3a", value)
    return field(b"\x0a", str(value).encode())


def attributes(tag: bytes, values: Mapping[str, Any]) -> bytes:
    """Each (key, value) as a KeyValue field `tag` of the enclosing message; a None
    value is left out (as the OpenTelemetry API does).

    The common cases (a string, a small int, a bool, in a KeyValue under 128 bytes:
    every length one byte) are one %-format of a template each; the rest go through
    field() and any_value()."""
    out = []
    keys = _keys
    for key, value in values.items():
        if value is None:
            continue
        key_field = keys.get(key) or _key(key)
        kind = type(value)
        if kind is str:
            raw = value.encode()
            size = len(key_field) + len(raw) + 4  # the KeyValue's length
            if size < 128:
                out.append(
                    tag
                    + b"%c%s\x12%c\x0a%c%s"
                    % (size, key_field, size - len(key_field) - 2, len(raw), raw)
                )
                continue
        elif kind is int and 0 <= value < 16384:
            size = len(key_field)  # the KeyValue's length is size + 4 or + 5: one byte
            if value < 128 and size < 124:
                out.append(tag + b"%c%s\x12\x02\x18%c" % (size + 4, key_field, value))
                continue
            if value >= 128 and size < 123:
                out.append(
                    tag
                    + b"%c%s\x12\x03\x18%c%c"
                    % (size + 5, key_field, value & 0x7F | 0x80, value >> 7)
                )
                continue
        elif kind is bool and len(key_field) < 124:
            out.append(tag + b"%c%s\x12\x02\x10%c" % (len(key_field) + 4, key_field, value))
            continue
        out.append(field(tag, key_field + field(b"\x12", any_value(value))))
    return b"".join(out)


# Spans ----------------------------------------------------------------------------------


def span(  # noqa: PLR0917 - the hot path's call: positional is cheaper than keywords
    trace_id: str,
    span_id: str,
    parent_id: str | None,
    name: str,
    kind: int,
    start_ns: int,
    end_ns: int,
    values: Mapping[str, Any],
    error: str | None = None,
    *,
    encoded: bytes = b"",
    flags: int = FLAGS_LOCAL_PARENT,
    trace_state: bytes | None = None,
    events: Sequence[Event] = (),
    links: Sequence[Link] = (),
) -> bytes:
    """One Span, already wrapped as a `ScopeSpans.spans` field (2): what a batch joins.

    Ids are lower-case hex (as in `traceparent`); times are Unix ns; `error` sets the
    status to ERROR with that message (the status stays UNSET otherwise); `encoded` is
    attributes already encoded (by `attributes(ATTRIBUTE, ...)` or a template), written
    before `values`."""
    # trace_id (1), span_id (2), [trace_state (3)], parent_span_id (4): 16, 8, 8 bytes
    parent = "2208" + parent_id if parent_id else ""
    if not (trace_state or values or events or links):  # Potok's spans: one %-format
        raw_name = name.encode()
        status = b""
        if error is not None:
            status = field(
                b"\x7a", (field(b"\x12", error.encode()) if error else b"") + _STATUS_ERROR
            )
        if len(raw_name) < 128:
            body = b"%s\x2a%c%s%s%s%s%s" % (
                bytes.fromhex("0a10" + trace_id + "1208" + span_id + parent),
                len(raw_name),
                raw_name,
                _KIND_TIMES(0x30, kind, 0x39, start_ns, 0x41, end_ns),
                encoded,
                status,
                _FLAG_FIELDS.get(flags) or _FLAGS(b"\x85\x01", flags),
            )
            size = len(body)
            if 128 <= size < 16384:
                return b"\x12%c%c%s" % (size & 0x7F | 0x80, size >> 7, body)
            return field(b"\x12", body)
    if trace_state:
        parts = [
            bytes.fromhex("0a10" + trace_id + "1208" + span_id),
            field(b"\x1a", trace_state),
            bytes.fromhex(parent),
        ]
    else:
        parts = [bytes.fromhex("0a10" + trace_id + "1208" + span_id + parent)]
    parts.append(field(b"\x2a", name.encode()))
    parts.append(_KIND_TIMES(0x30, kind, 0x39, start_ns, 0x41, end_ns))
    if encoded:
        parts.append(encoded)
    if values:
        parts.append(attributes(b"\x4a", values))
    for event in events:
        parts.append(field(b"\x5a", _event(event)))
    for link in links:
        parts.append(field(b"\x6a", _link(link)))
    if error is not None:
        message = field(b"\x12", error.encode()) if error else b""  # "" is the default
        parts.append(field(b"\x7a", message + _STATUS_ERROR))
    parts.append(_FLAGS(b"\x85\x01", flags))
    return field(b"\x12", b"".join(parts))


def parent_fields(trace_state: bytes | None, parent_id: bytes | None) -> bytes:
    """Span.trace_state (3) and parent_span_id (4, 8 raw bytes), each when present."""
    encoded = field(b"\x1a", trace_state) if trace_state else b""
    return encoded + b"\x22\x08" + parent_id if parent_id else encoded


def name_field(name: str) -> bytes:
    """Span.name (5)."""
    return field(b"\x2a", name.encode())


def error_status(error: str | None) -> bytes:
    """Span.status (15): ERROR with the message `error`, or nothing (UNSET) for None."""
    if error is None:
        return b""
    return field(b"\x7a", (field(b"\x12", error.encode()) if error else b"") + _STATUS_ERROR)


def flags_field(flags: int) -> bytes:
    """Span.flags (16)."""
    return _FLAG_FIELDS.get(flags) or _FLAGS(b"\x85\x01", flags)


def _event(event: Event) -> bytes:
    time_ns, name, values = event
    return _EVENT_TIME(0x09, time_ns) + field(b"\x12", name.encode()) + attributes(b"\x1a", values)


def _link(link: Link) -> bytes:
    trace_id, span_id, trace_state, values = link
    encoded = bytes.fromhex("0a10" + trace_id + "1208" + span_id)
    if trace_state:
        encoded += field(b"\x1a", trace_state.encode())
    return encoded + attributes(b"\x22", values) + _LINK_FLAGS(0x35, 0x101)


def exception_event(time_ns: int, exception: BaseException) -> Event:
    """The semantic conventions' `exception` event."""
    kind = type(exception)
    module = kind.__module__
    qualified = kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
    values = {"exception.type": qualified, "exception.message": str(exception)}
    return (time_ns, "exception", values)


ATTRIBUTE = b"\x4a"  # Span.attributes (9)


def string_prefixes(key: str, longest: int) -> list[bytes]:
    """A string attribute `key` up to `longest` bytes long, encoded but for its value:
    by the value's length, what goes before the value (so that one attribute is two
    %s in a template). Valid while every length takes one byte (under 128)."""
    key_field = _key(key)
    if len(key_field) + 4 + longest >= 128:  # the KeyValue's length
        raise ValueError(f"{key} of {longest} bytes would need two-byte lengths")
    prefixes = []
    for size in range(longest + 1):
        value_field = b"\x0a" + _SMALL[size]  # AnyValue.string_value (1)
        key_value = key_field + b"\x12" + _SMALL[size + 2] + value_field
        prefixes.append(ATTRIBUTE + _SMALL[len(key_value) + size] + key_value)
    return prefixes


# The request ----------------------------------------------------------------------------


class Envelope:
    """The resource and scope of every batch, encoded once; `request` wraps a batch of
    encoded spans into an ExportTraceServiceRequest."""

    __slots__ = ("_resource_and_scope",)

    def __init__(self, resource: Mapping[str, Any], scope_name: str, scope_version: str) -> None:
        resource_field = field(b"\x0a", attributes(b"\x0a", resource))  # ResourceSpans.resource
        scope = field(b"\x0a", scope_name.encode()) + field(b"\x12", scope_version.encode())
        self._resource_and_scope = (resource_field, field(b"\x0a", scope))

    def request(self, spans: Iterable[bytes]) -> bytes:
        """One join: the lengths of the enclosing messages are added up, not copied."""
        resource_field, scope_field = self._resource_and_scope
        spans = spans if isinstance(spans, list) else list(spans)
        size = len(scope_field) + sum(map(len, spans))
        scope_spans = b"\x12" + varint(size)  # ResourceSpans.scope_spans
        outer = len(resource_field) + len(scope_spans) + size
        head = b"\x0a" + varint(outer) + resource_field + scope_spans + scope_field
        return b"".join([head, *spans])  # request.resource_spans
