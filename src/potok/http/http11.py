"""HTTP/1.1 framing facts and precomputed byte strings shared by the server (server/) and
the upstream client (upstream/): neutral ground (potok.http), so neither side imports the other."""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus

# Connection-scoped headers never forwarded (RFC 9110 7.6.1), plus proxy-only ones.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)

CRLF = b"\r\n"
LAST_CHUNK = b"0\r\n\r\n"
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"

_status_lines: dict[tuple[int, bytes], bytes] = {}


def status_line(status: int, reason: bytes | None = None) -> bytes:
    """`HTTP/1.1 200 OK\\r\\n`, cached: the set of (status, reason) pairs seen is small."""
    key = (status, reason or b"")
    line = _status_lines.get(key)
    if line is None:
        if not reason:
            try:
                reason = HTTPStatus(status).phrase.encode()
            except ValueError:
                reason = b"Unknown"
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        if len(_status_lines) < 1024:
            _status_lines[key] = line
    return line


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def header_block(headers: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join([b"%s: %s\r\n" % pair for pair in headers])


class DateHeader:
    """The `Date` value, formatted at most once a second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode()
        return self._value


date_header = DateHeader()


def connection_tokens(value: bytes) -> set[bytes]:
    return {token.strip().lower() for token in value.split(b",") if token.strip()}


def first_header(headers: list[tuple[bytes, bytes]], lower_name: bytes) -> bytes | None:
    """The first value of a header by lower-case name, from raw (name, value) pairs.

    Comparing lengths first lower-cases only the names that can match: for a
    browser's 13 headers, 5,300 instructions instead of 6,100 with the header
    present and 6,400 instead of 8,600 without (callgrind, CPython 3.11)."""
    size = len(lower_name)
    for name, value in headers:
        if len(name) == size and name.lower() == lower_name:
            return value
    return None
