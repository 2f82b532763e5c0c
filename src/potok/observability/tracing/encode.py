"""The tracer's request-path encoders: the id pool's entries, a request's server span and
an upstream attempt's span.

Each is here in Python (the reference, and what runs where the extension was not built)
and in C (`_encode.c`, built by setup.py when a compiler is there): the same bytes for
the same arguments (tests/unit/test_span_encoders.py). `NATIVE` says which the tracer
uses. At 100 % sampling the Python versions cost a request ~10,000 more instructions
(BENCHMARKS.md, "Tracing"): formatting, struct packing and strided copies that C does
as one sized write.
"""

from __future__ import annotations

import struct
from binascii import hexlify
from collections.abc import Callable

from potok.observability.tracing import otlp

POOLED_FIELDS = 66  # an entry's span fields
POOLED_LINE = 70  # an entry's `traceparent` line
_TIMES = struct.Struct("<BQBQ").pack  # Span.start_time_unix_nano (7), end (8)
_ATTRIBUTE = otlp.ATTRIBUTE


def python_server_span(  # noqa: PLR0917 - one positional call per sampled request
    fields: bytes,
    head: bytes,
    start: int,
    duration: float,
    attributes: bytes,
    addresses: bytes,
    path: bytes,
    request_id: str,
    agent: bytes,
    tail: bytes,
) -> bytes:
    """A request's server span as a ScopeSpans.spans field: the first 28 bytes of `fields`
    (an id pool entry: trace_id and span_id), `head` (name and kind), start and end
    (start + int(duration * 1e9) ns), `attributes`, `addresses`, url.path = `path`
    (read as Latin-1), potok.request_id, `agent`, `tail` (status and flags)."""
    times = _TIMES(0x39, start, 0x41, start + int(duration * 1e9) if duration > 0 else start)
    raw_id = request_id.encode()
    a, b = len(path), len(raw_id)
    if (a | b) < 64 and path.isascii():  # one %-format: every length one byte
        size = (
            _SERVER_CONSTANT + len(head) + len(attributes) + len(addresses) + len(agent)
            + len(tail) + a + b
        )  # fmt: skip
        if 128 <= size < 16384:
            return _SERVER_SPAN % (
                size & 0x7F | 0x80,
                size >> 7,
                fields,
                head,
                times,
                attributes,
                addresses,
                _PATH_PREFIXES[a],
                path,
                _REQUEST_ID_PREFIXES[b],
                raw_id,
                agent,
                tail,
            )
    unique = otlp.attributes(
        _ATTRIBUTE, {"url.path": path.decode("latin-1"), "potok.request_id": request_id}
    )
    body = (fields[:28], head, times, attributes, addresses, unique, agent, tail)
    return otlp.field(b"\x12", b"".join(body))


def python_attempt_span(  # noqa: PLR0917 - as server_span
    fields: bytes, head: bytes, start: int, end: int, attributes: bytes, tail: bytes
) -> bytes:
    """An upstream attempt's span as a ScopeSpans.spans field: `fields` (trace_id,
    span_id, [trace_state,] parent_span_id), `head` (name and kind), start and end (ns),
    `attributes`, `tail` (status and flags)."""
    times = _TIMES(0x39, start, 0x41, end)
    size = len(fields) + len(head) + 18 + len(attributes) + len(tail)
    if 128 <= size < 16384:
        return b"\x12%c%c%s%s%s%s%s" % (
            size & 0x7F | 0x80,
            size >> 7,
            fields,
            head,
            times,
            attributes,
            tail,
        )
    return otlp.field(b"\x12", b"".join((fields, head, times, attributes, tail)))


def python_pool_entries(
    random: bytes, dense: bool, bound: bytes
) -> tuple[bytes, list[bytes], bytes] | None:
    """The id pool's (fields, lines, sampled) from `random` (32 bytes an entry: trace id
    T, server span id S, first attempt's span id X). Per entry: its span fields
    [0a 10 T][12 08 S][0a 10 T][12 08 X][22 08 S] (b"" for all unless `dense`); its line
    b"traceparent: 00-<T>-<X>-<flags>\\r\\n"; whether it is sampled (a byte, 1 or 0): when
    the low 64 bits of T, as 16 hex digits, sort below `bound` (16 hex digits; b"g"
    samples all), and then its flags are 01. None when an id would be all zeros."""
    count, rest = divmod(len(random), 32)
    if rest:
        raise ValueError("random must hold 32 bytes an entry")
    if not 1 <= len(bound) <= 16:
        raise ValueError("bound must hold 1 to 16 hex digits")
    digits = hexlify(random)
    if _ZERO_RUN in digits:  # 16 zero digits somewhere: maybe an all-zero id
        for at in range(0, len(random), 32):
            if not (any(random[at : at + 16]) and any(random[at + 16 : at + 24])):
                return None
            if not any(random[at + 24 : at + 32]):
                return None
    fields = b""
    if dense:
        raw = bytearray(_FIELDS_TEMPLATE * count)
        for at, start, size in _RAW_PLACES:  # strided copies: a byte of every entry each
            for byte in range(size):
                raw[at + byte :: POOLED_FIELDS] = random[start + byte :: 32]
        fields = bytes(raw)
    lines = []
    sampled = bytearray(count)
    for entry in range(count):
        trace, attempt = (
            digits[entry * 64 : entry * 64 + 32],
            digits[entry * 64 + 48 : entry * 64 + 64],
        )
        chosen = trace[16:] < bound
        sampled[entry] = chosen
        lines.append(b"traceparent: 00-%s-%s-0%d\r\n" % (trace, attempt, chosen))
    return fields, lines, bytes(sampled)


# The server span of python_server_span's common case: the ScopeSpans.spans field's tag
# and two-byte length, the trace and span id fields (%.28s: the first 28 bytes of a pool
# entry), name and kind, times, attributes, addresses, path and request id (each a
# prefix by length and the value), the user agent, status and flags.
_SERVER_SPAN = b"\x12%c%c%.28s%s%s%s%s%s%s%s%s%s%s"
# By length (under 64 bytes): the attribute but for the value.
_PATH_PREFIXES = otlp.string_prefixes("url.path", 63)
_REQUEST_ID_PREFIXES = otlp.string_prefixes("potok.request_id", 63)
# The ids' fields (28), times (18) and the path's and request id's prefixes.
_SERVER_CONSTANT = 28 + 18 + len(_PATH_PREFIXES[0]) + len(_REQUEST_ID_PREFIXES[0])
_ZERO_RUN = b"0" * 16
_FIELDS_TEMPLATE = (
    b"\x0a\x10" + bytes(16) + b"\x12\x08" + bytes(8)
    + b"\x0a\x10" + bytes(16) + b"\x12\x08" + bytes(8) + b"\x22\x08" + bytes(8)
)  # fmt: skip
# Where the random bytes of an entry (T, S, X at 0, 16, 24) go in its fields: (at, from, size).
_RAW_PLACES = ((2, 0, 16), (20, 16, 8), (30, 0, 16), (48, 24, 8), (58, 16, 8))

ServerSpan = Callable[[bytes, bytes, int, float, bytes, bytes, bytes, str, bytes, bytes], bytes]
AttemptSpan = Callable[[bytes, bytes, int, int, bytes, bytes], bytes]
PoolEntries = Callable[[bytes, bool, bytes], "tuple[bytes, list[bytes], bytes] | None"]

server_span: ServerSpan = python_server_span
attempt_span: AttemptSpan = python_attempt_span
pool_entries: PoolEntries = python_pool_entries
try:
    from potok.observability.tracing import _encode
except ImportError:  # built without a C compiler
    NATIVE = False
else:
    NATIVE = True
    server_span = _encode.server_span
    attempt_span = _encode.attempt_span
    pool_entries = _encode.pool_entries
