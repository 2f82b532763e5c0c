"""The `grpc-timeout` request header (gRPC over HTTP/2: "Timeout").

    Timeout      → "grpc-timeout" TimeoutValue TimeoutUnit
    TimeoutValue → {positive integer as ASCII string of at most 8 digits}
    TimeoutUnit  → Hour "H" / Minute "M" / Second "S" / Millisecond "m" /
                   Microsecond "u" / Nanosecond "n"

The gateway bounds the call by it (with the route's own timeout) and forwards what is
left of it upstream, so the server sees the deadline its client set, minus the time the
call spent in the gateway.
"""

from __future__ import annotations

_UNITS = {
    ord("H"): 3600.0,
    ord("M"): 60.0,
    ord("S"): 1.0,
    ord("m"): 1e-3,
    ord("u"): 1e-6,
    ord("n"): 1e-9,
}
_MAX_DIGITS = 8


class BadTimeout(ValueError):
    """A grpc-timeout value that does not follow the grammar."""


def parse_timeout(value: bytes) -> float:
    """Seconds; BadTimeout for anything the grammar does not allow."""
    digits, unit = value[:-1], value[-1:]
    scale = _UNITS.get(unit[0]) if unit else None
    if scale is None:
        raise BadTimeout(f"grpc-timeout {value[:16]!r}: the unit must be one of H M S m u n")
    if not digits or len(digits) > _MAX_DIGITS or not digits.isdigit():
        raise BadTimeout(f"grpc-timeout {value[:16]!r}: the value must be 1 to 8 digits")
    return int(digits) * scale


def format_timeout(seconds: float) -> bytes:
    """The shortest exact-enough header value for `seconds` (at most 8 digits)."""
    if seconds <= 0:
        return b"1n"
    for unit, scale in ((b"n", 1e-9), (b"u", 1e-6), (b"m", 1e-3), (b"S", 1.0), (b"M", 60.0)):
        amount = int(seconds / scale)
        if amount < 100_000_000:
            return b"%d%s" % (max(amount, 1), unit)
    return b"%d%s" % (min(int(seconds / 3600.0), 99_999_999), b"H")
