"""Answering a request from a stored response: Age, Cache-Status, the client's own
conditions (RFC 9110 §13) and ranges, HEAD from a GET's entry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from potok.policies.cache.freshness import http_date

if TYPE_CHECKING:
    from potok.exchange import Exchange, ResponseSink
    from potok.policies.cache.stored import StoredResponse

Headers = list[tuple[bytes, bytes]]

# RFC 9110 §15.4.5: what a 304 carries of the 200 it stands for.
_NOT_MODIFIED_FIELDS = frozenset(
    {
        b"cache-control",
        b"content-location",
        b"date",
        b"etag",
        b"expires",
        b"vary",
        b"last-modified",
        b"cache-tag",
        b"surrogate-key",
    }
)


def send_stored(
    exchange: Exchange,
    downstream: ResponseSink,
    entry: StoredResponse,
    now: float,
    extra: Headers,
) -> None:
    """Send `entry` to the client through `downstream`: a 304 if the client's own
    conditions say it has it, a 206 for one satisfiable byte range, else in full."""
    headers = [*entry.headers, (b"Age", b"%d" % int(entry.age(now))), *extra]
    head_only = exchange.method == b"HEAD"
    if entry.status == 200 and not_modified(exchange, entry):
        kept = [(n, v) for n, v in headers if n.lower() in _NOT_MODIFIED_FIELDS]
        kept.extend((n, v) for n, v in headers[len(entry.headers) :])
        downstream.send_head(304, kept, reason=b"Not Modified", length=None, body=False)
        downstream.end()
        return
    body = entry.body
    status, reason = entry.status, entry.reason
    if entry.status == 200 and not head_only:
        ranged = byte_range(exchange, entry)
        if ranged is not None:
            status, reason, body, range_header = ranged
            headers.append(range_header)
    downstream.send_head(status, headers, reason=reason, length=len(body), body=not head_only)
    if body and not head_only:
        downstream.send_body(body)
    downstream.end()


def not_modified(exchange: Exchange, entry: StoredResponse) -> bool:
    """RFC 9110 §13.1.2 / §13.1.3 on a GET or HEAD: If-None-Match (weak comparison)
    decides when present; otherwise If-Modified-Since against Last-Modified."""
    if_none_match = exchange.header(b"if-none-match")
    if if_none_match is not None:
        tag = entry.etag
        if tag is None:
            return False
        if if_none_match.strip() == b"*":
            return True
        opaque = _opaque(tag)
        return any(_opaque(item) == opaque for item in if_none_match.split(b","))
    since = exchange.header(b"if-modified-since")
    if since is None:
        return False
    since_time = http_date(since)
    modified = http_date(entry.last_modified)
    return since_time is not None and modified is not None and modified <= since_time


def _opaque(tag: bytes) -> bytes:
    tag = tag.strip()
    return tag[2:] if tag.startswith(b"W/") else tag


def byte_range(
    exchange: Exchange, entry: StoredResponse
) -> tuple[int, bytes, bytes, tuple[bytes, bytes]] | None:
    """One satisfiable `bytes=` range of the stored 200 (206), an unsatisfiable one (416),
    or None to send it whole: several ranges, another unit, a failed If-Range or a
    malformed header (RFC 9110 §14.2 lets a server ignore Range)."""
    header = exchange.header(b"range")
    if header is None:
        return None
    if_range = exchange.header(b"if-range")
    if if_range is not None and not _if_range_holds(if_range, entry):
        return None
    unit, _, spec = header.partition(b"=")
    if unit.strip().lower() != b"bytes" or b"," in spec:
        return None
    first, dash, last = spec.strip().partition(b"-")
    size = len(entry.body)
    if not dash or not (first.isdigit() or last.isdigit()):
        return None
    if (first and not first.isdigit()) or (last and not last.isdigit()):
        return None
    if not first:  # a suffix: the last N bytes
        start, end = max(0, size - int(last)), size - 1
        if int(last) == 0:
            return _unsatisfiable(size)
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        if last and int(last) < start:
            return None
    if start >= size:
        return _unsatisfiable(size)
    content_range = (b"Content-Range", b"bytes %d-%d/%d" % (start, end, size))
    return 206, b"Partial Content", entry.body[start : end + 1], content_range


def _unsatisfiable(size: int) -> tuple[int, bytes, bytes, tuple[bytes, bytes]]:
    return 416, b"Range Not Satisfiable", b"", (b"Content-Range", b"bytes */%d" % size)


def _if_range_holds(value: bytes, entry: StoredResponse) -> bool:
    """If-Range: a strong ETag equal to the entry's, or its exact Last-Modified date."""
    value = value.strip()
    if value.startswith(b'"'):
        return entry.etag is not None and entry.etag.strip() == value
    if value.startswith(b"W/"):
        return False
    return entry.last_modified is not None and http_date(value) == http_date(entry.last_modified)
