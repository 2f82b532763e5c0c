"""W3C Trace Context (https://www.w3.org/TR/trace-context/): `traceparent` in and out,
and the ids the gateway draws."""

from __future__ import annotations

import os

from potok.observability.tracing.encode import POOLED_FIELDS, POOLED_LINE, pool_entries

_HEX = frozenset(b"0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16

# The pool: ids for this many requests drawn at once, 32 random bytes each: a trace id
# T (16), a server span id S and a first attempt's span id X (8 each). Entry i is kept
#   in `raw` (FIELDS bytes from i * FIELDS) as the span fields protobuf needs, tags and
#   all: [0a 10 T][12 08 S] [0a 10 T][12 08 X][22 08 S]: the server span's trace_id and
#   span_id fields (its first 28 bytes), then the attempt span's trace_id, span_id and
#   parent_span_id fields (ATTEMPT_FIELDS);
#   in `lines[i]` as the `traceparent` line its request sends upstream,
#   "traceparent: 00-T-X-01\r\n" when it is sampled (`sampled[i]`), else "...-00\r\n":
#   the sampling decision is made for the whole pool when it is drawn.
# One `os.urandom` and one pool_entries (encode.py: C, or Python) per POOLED requests:
# formatting ids per request cost ~3,000 instructions, a pool's slice ~1,000, a list's
# item ~100 (bench/instructions.sh).
POOLED = 512
FIELDS = POOLED_FIELDS
LINE = POOLED_LINE  # b"traceparent: 00-" + 32 + b"-" + 16 + b"-00\r\n"
ALL = b"g"  # a sampling bound above every 16 hex digits: every entry sampled
TRACE_AT = 16  # where a line's trace id (32 hex digits) begins
SPAN_AT = 49  # where its span id (16 hex digits) begins
FLAGS_AT = 65  # where its "-00\r\n" begins
ATTEMPT_FIELDS = slice(28, 66)
# An entry's fields made from its ids (T, S, T, X, S) when `raw` is not written.
_FIELDS_FORMAT = b"\x0a\x10%s\x12\x08%s\x0a\x10%s\x12\x08%s\x22\x08%s"


try:  # the state the C `begin` reads (_encode.c), as C members
    from potok.observability.tracing._encode import Pool as _PoolState
except ImportError:  # built without a C compiler

    class _PoolState:  # type: ignore[no-redef]
        __slots__ = ("lines", "next", "raw", "sampled")


class IdPool(_PoolState):
    """POOLED entries of ids, taken in order; refilled when `next` reaches POOLED. One
    per process (ID_POOL), emptied in a forked child so no two workers share ids. The
    tracer's begin reads `next`, `lines`, `sampled` and `raw` itself on the request path
    (a method call there costs more than the item it would return)."""

    __slots__ = ("bound", "dense", "random")
    lines: list[bytes]
    next: int
    raw: bytes
    sampled: bytes

    def __init__(self) -> None:
        self.random = b""
        self.raw = b""
        self.lines: list[bytes] = []
        self.sampled = b""
        self.next = POOLED
        # Set by the tracer from its ratio (sample: ids whose low 64 bits, as 16 hex
        # digits, sort below `bound`), with `dense`: whether `raw` is written for every
        # entry at refill (cheaper per sampled request) or each entry's fields on demand
        # (`fields`; cheaper when few are sampled); the bytes are the same either way.
        self.bound = ALL
        self.dense = True

    def configure(self, bound: bytes, dense: bool) -> None:
        """Sample below `bound`, write `raw` or not: the entries drawn under other
        settings are dropped."""
        if (bound, dense) != (self.bound, self.dense):
            self.bound, self.dense = bound, dense
            self.empty()

    def refill(self) -> None:
        while True:
            random = os.urandom(32 * POOLED)
            entries = pool_entries(random, self.dense, self.bound)
            if entries is not None:  # else an all-zero id (invalid), about once in 10**16 pools
                break
        self.raw, self.lines, self.sampled = entries
        self.random = random
        self.next = 0

    def take(self) -> int:
        """The next entry's index."""
        index = self.next
        if index == POOLED:
            self.refill()
            index = 0
        self.next = index + 1
        return index

    def fields(self, index: int) -> bytes:
        """Entry `index`'s FIELDS bytes."""
        at = index * FIELDS
        if self.raw:
            return self.raw[at : at + FIELDS]
        ids = self.random[index * 32 : index * 32 + 32]
        trace, server, attempt = ids[:16], ids[16:24], ids[24:]
        return _FIELDS_FORMAT % (trace, server, trace, attempt, server)

    def empty(self) -> None:
        self.next = POOLED
        self.random = self.raw = self.sampled = b""
        self.lines = []


ID_POOL = IdPool()
os.register_at_fork(after_in_child=ID_POOL.empty)


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


def _hex(part: bytes) -> bool:
    return all(byte in _HEX for byte in part)
