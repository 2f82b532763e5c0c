"""Finished spans to the collector: a bounded queue and OTLP/HTTP batches, on the loop.

Spans arrive already encoded (otlp.py), so what is left per batch is a join and one
HTTP/1.1 POST of `application/x-protobuf` over a kept-alive connection. That is done
on the event loop with non-blocking I/O, not in a thread: the loop does nothing but
write and read a few kilobytes a second, while a thread would share the GIL with the
loop (a CPU-bound holder makes the loop wait up to the 5 ms switch interval after each
of its system calls) and need a lock or an event per hand-over. See BENCHMARKS.md for
the measured cost per batch.

A batch goes when `batch.max_spans` are waiting or `batch.interval` after the first
span. The OTLP/HTTP spec's retry rules (https://opentelemetry.io/docs/specs/otlp/#otlphttp-response):
429, 502, 503 and 504 and connection failures are retried with exponential backoff
(jittered), a `Retry-After` is honoured, other statuses fail the batch; a batch is
given up after `retry_for`. Spans beyond `batch.max_queue` are dropped and counted:
a collector that is down never slows a request or grows memory.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import random
import socket
import ssl
import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import structlog

from potok import __version__
from potok.observability.tracing.otlp import Envelope

if TYPE_CHECKING:
    from potok.observability.metrics import MetricsRegistry
    from potok.observability.tracing.config import TracingConfig

log = structlog.get_logger("potok.tracing")

RETRYABLE = frozenset({429, 502, 503, 504})
BACKOFF_INITIAL = 0.5  # s, doubled per retry up to BACKOFF_MAX, each drawn in [50 %, 100 %]
BACKOFF_MAX = 30.0
_MAX_RESPONSE_BODY = 1 << 20


class ExportFailed(Exception):
    """The collector could not be reached or answered unreadably."""


class TraceExporter:
    """One per worker (a shared resource): survives reloads that keep its settings."""

    def __init__(self, config: TracingConfig, metrics: MetricsRegistry | None = None) -> None:
        self._config = config
        self._envelope = Envelope(
            {
                "service.name": config.service_name,
                "service.version": __version__,
                "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
                "telemetry.sdk.name": "potok",
                "telemetry.sdk.language": "python",
                "telemetry.sdk.version": __version__,
            },
            "potok",
            __version__,
        )
        url = urlsplit(config.endpoint)
        self._tls = ssl.create_default_context() if url.scheme == "https" else None
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or (443 if self._tls is not None else 80)
        host = url.netloc.rpartition("@")[2]
        head = (
            f"POST {url.path or '/'}{'?' + url.query if url.query else ''} HTTP/1.1\r\n"
            f"Host: {host}\r\nContent-Type: application/x-protobuf\r\n"
            f"User-Agent: potok/{__version__}\r\n"
        )
        head += "".join(f"{name}: {value}\r\n" for name, value in config.headers.items())
        if config.compression == "gzip":
            head += "Content-Encoding: gzip\r\n"
        self._head = head.encode("latin-1")
        self._gzip = config.compression == "gzip"
        self._queue: list[bytes] = []  # encoded spans, oldest first
        self._max_queue = config.batch.max_queue
        self._batch = config.batch.max_spans
        self._timer: asyncio.TimerHandle | None = None
        self._sender: asyncio.Task[None] | None = None
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._closing = False
        self.batches = 0  # export requests that succeeded
        if metrics is None:
            self._exported, self._dropped, self._failed = [0.0], [0.0], [0.0]
        else:
            exported = metrics.counter(
                "tracing_spans_exported_total", "Spans the collector accepted."
            )
            dropped = metrics.counter(
                "tracing_spans_dropped_total",
                "Spans not exported: the queue was full, or the export failed for good.",
                ("reason",),
            )
            self._exported = exported.cell(())
            self._dropped = dropped.cell(("queue_full",))
            self._failed = dropped.cell(("export_failed",))

    @property
    def exported_spans(self) -> int:
        return int(self._exported[0])

    @property
    def dropped_spans(self) -> int:
        return int(self._dropped[0])

    @property
    def failed_spans(self) -> int:
        return int(self._failed[0])

    @property
    def queued_spans(self) -> int:
        return len(self._queue)

    def submit(self, spans: list[bytes]) -> None:
        """A finished trace's encoded spans (on the loop, at the end of a request)."""
        queue = self._queue
        if len(queue) + len(spans) > self._max_queue or self._closing:
            self._dropped[0] += len(spans)
            return
        queue += spans
        if self._sender is None:
            if len(queue) >= self._batch:
                self._send_now()
            elif self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(
                    self._config.batch.interval, self._send_now
                )

    def _send_now(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sender is None and self._queue:
            self._sender = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Full batches back to back; a partial one waits for the next interval."""
        queue = self._queue
        try:
            while True:
                batch = queue[: self._batch]
                del queue[: self._batch]
                await self._export(batch)
                if len(queue) < self._batch or self._closing:
                    break
        finally:
            self._sender = None
        if queue and not self._closing:
            self._timer = asyncio.get_running_loop().call_later(
                self._config.batch.interval, self._send_now
            )

    async def close(self) -> None:
        """Send what is queued (one try each, within the timeout) and close (at shutdown)."""
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sender is not None:
            self._sender.cancel()  # a batch waiting out a backoff is given up
            await asyncio.gather(self._sender, return_exceptions=True)
        deadline = time.monotonic() + self._config.timeout
        while self._queue and time.monotonic() < deadline:
            batch = self._queue[: self._batch]
            del self._queue[: self._batch]
            await self._export(batch)
        self._disconnect()

    # One batch -----------------------------------------------------------------------

    async def _export(self, spans: list[bytes]) -> None:
        body = self._envelope.request(spans)
        if self._gzip:
            body = gzip.compress(body, compresslevel=1, mtime=0)
        config = self._config
        give_up = time.monotonic() + config.retry_for
        retries = 0
        while True:
            reused = self._stream is not None
            try:
                async with asyncio.timeout(config.timeout):
                    status, retry_after = await self._post(body)
            except (OSError, ExportFailed, TimeoutError, asyncio.IncompleteReadError) as exc:
                self._disconnect()
                if reused:  # the collector closed the kept-alive connection: reconnect once
                    continue
                status, retry_after, reason = 0, None, f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= status < 300:
                    self._exported[0] += len(spans)
                    self.batches += 1
                    return
                reason = f"HTTP {status}"
                if status not in RETRYABLE:
                    self._fail(spans, reason)
                    return
            delay = retry_after if retry_after is not None else _backoff(retries)
            if self._closing or time.monotonic() + delay > give_up:
                self._fail(spans, reason)
                return
            retries += 1
            await asyncio.sleep(delay)

    def _fail(self, spans: list[bytes], reason: str) -> None:
        self._failed[0] += len(spans)
        log.warning("trace export failed", reason=reason, spans=len(spans))

    async def _post(self, body: bytes) -> tuple[int, float | None]:
        """(status, Retry-After in seconds or None) of one POST."""
        if self._stream is None:
            self._stream = await asyncio.open_connection(
                self._host,
                self._port,
                ssl=self._tls,
                server_hostname=self._host if self._tls is not None else None,
            )
        reader, writer = self._stream
        writer.writelines((self._head, b"Content-Length: %d\r\n\r\n" % len(body), body))
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status, headers = _parse_head(head)
        if headers.get("transfer-encoding", "").lower() == "chunked":
            await _skip_chunked(reader)
        else:
            length = int(headers.get("content-length", "0") or "0")
            if length > _MAX_RESPONSE_BODY:
                raise ExportFailed("response body too large")
            await reader.readexactly(length)  # an ExportTraceServiceResponse, unread
        if headers.get("connection", "").lower() == "close" or head.startswith(b"HTTP/1.0"):
            self._disconnect()
        return status, _retry_after(headers.get("retry-after"))

    def _disconnect(self) -> None:
        if self._stream is not None:
            self._stream[1].close()
            self._stream = None


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ExportFailed(f"not an HTTP/1.x response: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _skip_chunked(reader: asyncio.StreamReader) -> None:
    total = 0
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        total += size
        if total > _MAX_RESPONSE_BODY:
            raise ExportFailed("response body too large")
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return
        await reader.readexactly(size + 2)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delay-seconds or an HTTP-date, RFC 9110 10.2.3)."""
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _backoff(retries: int) -> float:
    ceiling: float = min(BACKOFF_MAX, BACKOFF_INITIAL * 2.0 ** min(retries, 16))
    return ceiling * (0.5 + random.random() / 2)  # jitter, not a secret
