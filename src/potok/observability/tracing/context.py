"""W3C Trace Context (https://www.w3.org/TR/trace-context/): `traceparent` in and out,
and the ids the gateway draws."""

from __future__ import annotations

import os
import random
from binascii import hexlify

_HEX = frozenset(b"0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
# Ids must be unique, not secret (the OpenTelemetry SDK draws them the same way).
random_bits = _random = random.getrandbits

# The pool: ids for this many requests drawn at once. Entry i is 24 random bytes (a
# trace id's 16, a span id's 8) in `raw`, and the `traceparent` line an unsampled request
# with those ids sends upstream in `lines` (LINE bytes each, the ids' hex at fixed
# places): one `os.urandom`, one hexlify and 48 strided copies per POOLED requests,
# where formatting a line per request cost ~1,500 instructions of a request's ~188,000.
POOLED = 512
LINE = 70  # b"traceparent: 00-" + 32 + b"-" + 16 + b"-00\r\n"
TRACE_AT = 16  # the trace id's hex digits in a line: [16, 48)
SPAN_AT = 49  # the span id's: [49, 65)
SAMPLED_FLAGS = b"-01\r\n"
_LINE_TEMPLATE = b"traceparent: 00-" + b"0" * 32 + b"-" + b"0" * 16 + b"-00\r\n"
_ZERO_RUN = b"0" * 16


class IdPool:
    """POOLED entries of ids, taken in order; refilled when `next` reaches POOLED. One
    per process (ID_POOL), emptied in a forked child so no two workers share ids."""

    __slots__ = ("lines", "next", "raw")

    def __init__(self) -> None:
        self.raw = b""
        self.lines = b""
        self.next = POOLED

    def refill(self) -> None:
        while True:
            raw = os.urandom(24 * POOLED)
            digits = hexlify(raw)
            # An all-zero id is invalid: redraw if 16 zero digits occur anywhere (about
            # once in 10**15 pools), which covers every id.
            if _ZERO_RUN not in digits:
                break
        lines = bytearray(_LINE_TEMPLATE * POOLED)
        for digit in range(32):
            lines[TRACE_AT + digit :: LINE] = digits[digit::48]
        for digit in range(16):
            lines[SPAN_AT + digit :: LINE] = digits[32 + digit :: 48]
        self.raw = raw
        self.lines = bytes(lines)
        self.next = 0

    def take(self) -> int:
        """The next entry's index."""
        index = self.next
        if index == POOLED:
            self.refill()
            index = 0
        self.next = index + 1
        return index

    def span(self) -> tuple[bytes, bytes]:
        """A new span id: (8 raw bytes, 16 hex digits)."""
        index = self.take()
        at = index * LINE + SPAN_AT
        return self.raw[index * 24 + 16 : index * 24 + 24], self.lines[at : at + 16]

    def empty(self) -> None:
        self.next = POOLED
        self.raw = self.lines = b""


ID_POOL = IdPool()
os.register_at_fork(after_in_child=ID_POOL.empty)


def new_trace_id() -> str:
    """128 random bits as 32 lower-case hex digits (never all zero)."""
    return f"{_random(128) or 1:032x}"


def new_span_id() -> str:
    """64 random bits as 16 lower-case hex digits (never all zero)."""
    return f"{_random(64) or 1:016x}"


def parse_traceparent(value: bytes) -> tuple[str, str, bool] | None:
    """(trace id, parent span id, sampled) from a `traceparent` value, or None when it
    is not one (the spec: then start a new trace, as if there were none).

    Version 00 must be exactly 55 characters; a higher version may carry more fields
    after a '-', and only its first four are read. Version ff is invalid.
    """
    value = value.strip()
    if len(value) < 55 or (len(value) > 55 and value[55:56] != b"-"):
        return None
    version = value[0:2]
    if len(value) != 55 and version == b"00":
        return None
    if value[2:3] != b"-" or value[35:36] != b"-" or value[52:53] != b"-":
        return None
    trace_id, span_id, flags = value[3:35], value[36:52], value[53:55]
    if not (_hex(version) and _hex(trace_id) and _hex(span_id) and _hex(flags)):
        return None
    if version == b"ff":
        return None
    trace = trace_id.decode()
    span = span_id.decode()
    if trace == _ZERO_TRACE or span == _ZERO_SPAN:
        return None
    return trace, span, bool(int(flags, 16) & 1)


def traceparent(trace_id: str, span_id: str, sampled: bool) -> bytes:
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}".encode()


def _hex(part: bytes) -> bool:
    return all(byte in _HEX for byte in part)
