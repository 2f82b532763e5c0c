"""W3C Trace Context (https://www.w3.org/TR/trace-context/): `traceparent` in and out."""

from __future__ import annotations

import random

_HEX = frozenset(b"0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
# Ids must be unique, not secret (the OpenTelemetry SDK draws them the same way).
random_bits = _random = random.getrandbits


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
