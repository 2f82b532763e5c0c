"""The access log: one JSON line per request, batched and written by a thread.

The event loop only formats the line (orjson, about a microsecond) and appends
it to a list; every 100 ms, or at 64 KiB, the batch goes to a writer thread.
If the writer falls behind by more than `MAX_PENDING_BATCHES` (a stuck pipe),
batches are dropped and counted rather than blocking requests or growing memory.

A line has the application logs' shape (observability/logging.py): `timestamp`,
`level`, `event` ("request"), `worker`, `request_id`, then the request's fields.
A batch is cut at line ends into writes of at most PIPE_BUF bytes each, so the
workers of `--workers N` sharing one pipe never interleave inside a line (a file
is opened O_APPEND: each write lands whole at its end).
"""

from __future__ import annotations

import asyncio
import os
import queue
import select
import threading
import time
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from potok.exchange import Exchange

FLUSH_INTERVAL = 0.1
FLUSH_BYTES = 64 * 1024
MAX_PENDING_BATCHES = 256
PIPE_BUF = select.PIPE_BUF  # 4096 on Linux: a write of at most this to a pipe is atomic
_USER_AGENT = b"user-agent"


class _Clock:
    """ISO-8601 UTC timestamps, the seconds part formatted once a second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1000):03d}Z"


class AccessLog:
    def __init__(self, path: str, worker: str = "0") -> None:
        self._worker = worker
        self._fd = (
            1 if path == "-" else os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        )
        self._owns_fd = path != "-"
        self._lines: list[bytes] = []
        self._size = 0
        self._clock = _Clock()
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.dropped_batches = 0
        self._timer: asyncio.TimerHandle | None = None
        self._thread = threading.Thread(target=self._writer, name="potok-access-log", daemon=True)
        self._thread.start()

    def write(self, exchange: Exchange, duration: float) -> None:
        upstream = exchange.upstream_duration
        identity = exchange.identity
        line = orjson.dumps(
            {
                "timestamp": self._clock.now(),
                "level": "info",
                "event": "request",
                "worker": self._worker,
                "request_id": exchange.request_id,
                "method": exchange.method.decode("latin-1"),
                "path": exchange.path.decode("latin-1"),
                "route": exchange.route_name,
                "service": exchange.service_name,
                "target": exchange.target_name,
                "status": exchange.status,
                "duration_ms": round(duration * 1000, 3),
                "upstream_ms": round(upstream * 1000, 3) if upstream is not None else None,
                "bytes_in": exchange.bytes_in,
                "bytes_out": exchange.bytes_out,
                "client_ip": exchange.client_ip,
                "user_id": identity.subject if identity is not None else None,
                "user_agent": _user_agent(exchange.headers),
            }
        )
        self._lines.append(line)
        self._size += len(line) + 1
        if self._size >= FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        batch = b"\n".join(self._lines) + b"\n"
        self._lines = []
        self._size = 0
        if self._queue.qsize() >= MAX_PENDING_BATCHES:
            self.dropped_batches += 1
            return
        self._queue.put(batch)

    def close(self) -> None:
        """Flush and wait for the writer (used at shutdown, off the hot path)."""
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=5)
        if self._owns_fd:
            os.close(self._fd)

    def _writer(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            try:
                for chunk in _whole_lines(batch):
                    view = memoryview(chunk)
                    while view:
                        written = os.write(self._fd, view)
                        view = view[written:]
            except OSError:
                self.dropped_batches += 1


def _whole_lines(batch: bytes) -> list[bytes]:
    """`batch` cut at line ends into pieces of at most PIPE_BUF bytes (a longer line
    is a piece of its own)."""
    if len(batch) <= PIPE_BUF:
        return [batch]
    pieces = []
    start = 0
    while start < len(batch):
        end = batch.rfind(b"\n", start, start + PIPE_BUF) + 1
        if end <= start:  # one line longer than PIPE_BUF
            end = batch.index(b"\n", start) + 1
        pieces.append(batch[start:end])
        start = end
    return pieces


def _user_agent(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if len(name) == 10 and name.lower() == _USER_AGENT:
            return value.decode("latin-1")
    return None
