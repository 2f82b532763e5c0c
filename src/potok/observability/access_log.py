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

The line is one f-string, not orjson over a dict: building an 18-key dict and
serialising its keys cost about a quarter of what proxying the request costs. Only
the values that can hold a quote, a backslash or a control character go through
orjson: the path when it has a quote or a backslash (the parser refuses control
characters in it), a client IP taken from X-Forwarded-For, the user id; user
agents and the config's names are escaped once and remembered. The bytes are
those orjson writes, except that the durations always have three decimals
("1.200": the same number).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import select
import stat
import threading
import time
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from potok.exchange import Exchange

FLUSH_INTERVAL = 0.1
FLUSH_BYTES = 64 * 1024
MAX_PENDING_BATCHES = 256
PIPE_BUF = select.PIPE_BUF  # 4096 on Linux: a write of at most this to a pipe is atomic
_USER_AGENT = b"user-agent"
# Values remembered (user agents; method, route, service and target names) before
# starting over: a client sending a new user agent every time keeps memory flat.
REMEMBERED = 1024
# exchange.version -> the line's "protocol" (a dict lookup, not a format per request)
_PROTOCOLS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0", "2": "HTTP/2"}
_DIGITS = tuple(f"{n:03d}" for n in range(1000))  # a tuple lookup, not a format spec
_MILLISECONDS = tuple(f".{n:03d}Z" for n in range(1000))


_time = time.time


class AccessLog:
    def __init__(self, path: str, worker: str = "0") -> None:
        self._worker = worker
        self._fd = (
            1 if path == "-" else os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        )
        self._owns_fd = path != "-"
        # A regular file takes a batch in one write whatever its size (O_APPEND: it
        # lands whole at the end); a pipe or a terminal only PIPE_BUF bytes at once.
        self._whole_batches = stat.S_ISREG(os.fstat(self._fd).st_mode)
        fixed = orjson.dumps({"level": "info", "event": "request", "worker": worker})
        # `","level":...,"worker":"0","request_id":"`: what follows the timestamp.
        self._fixed = '",' + fixed[1:-1].decode() + ',"request_id":"'
        self._buffer = bytearray()  # whole lines, each with its newline
        self._names: dict[tuple[bytes, str, str, str], tuple[str, str]] = {}
        self._agents: dict[bytes, str] = {}
        # ISO-8601 UTC with milliseconds (`2026-12-06T04:02:17.365Z`): the part up to
        # the seconds is formatted once a second.
        self._second = -1
        self._seconds = ""
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.dropped_batches = 0
        self._timer: asyncio.TimerHandle | None = None
        self._thread = threading.Thread(target=self._writer, name="potok-access-log", daemon=True)
        self._thread.start()

    def write(self, exchange: Exchange, duration: float) -> None:
        now = _time()
        second = int(now)
        if second != self._second:
            self._new_second(second)
        path = exchange.path.decode("latin-1")
        if '"' in path or "\\" in path:  # the parser refuses control characters in it
            path = json_string(path)[1:-1]
        names = self._names.get(
            (exchange.method, exchange.route_name, exchange.service_name, exchange.target_name)
        )
        if names is None:
            names = self._name_fields(exchange)
        client_ip = exchange.client_ip
        if client_ip is not exchange.peer_ip:  # taken from X-Forwarded-For: any text
            client_ip = json_string(client_ip)[1:-1]
        identity = exchange.identity
        user_id = "null" if identity is None else json_string(identity.subject)
        user_agent = "null"
        for name, value in exchange.headers:
            if len(name) == 10 and name.lower() == _USER_AGENT:
                user_agent = self._agents.get(value) or self._agent_field(value)
                break
        # Durations in microseconds, written as milliseconds with three decimals.
        micros = int(duration * 1_000_000 + 0.5)
        upstream = exchange.upstream_duration
        if upstream is None:
            upstream_ms = "null"
        else:
            upstream_micros = int(upstream * 1_000_000 + 0.5)
            upstream_ms = f"{upstream_micros // 1000}.{_DIGITS[upstream_micros % 1000]}"
        lines = exchange.trace_lines  # tracing on: "traceparent: 00-<trace id>-..."
        trace_id = f',"trace_id":"{lines[16:48].decode()}"' if lines else ""
        context = exchange.context
        if context is not None and "grpc_status" in context:  # a gRPC call's outcome
            trace_id += f',"grpc_status":{context["grpc_status"]:d}'
        buffer = self._buffer
        buffer += (
            f'{{"timestamp":"{self._seconds}{_MILLISECONDS[int((now - second) * 1000)]}'
            f'{self._fixed}{exchange.request_id}",'
            f'{names[0]}"path":"{path}","protocol":"{_PROTOCOLS.get(exchange.version, "HTTP")}",'
            f'{names[1]}"status":{exchange.status},'
            f'"duration_ms":{micros // 1000}.{_DIGITS[micros % 1000]},"upstream_ms":{upstream_ms},'
            f'"bytes_in":{exchange.bytes_in},"bytes_out":{exchange.bytes_out},'
            f'"client_ip":"{client_ip}","user_id":{user_id},"user_agent":{user_agent}{trace_id}}}\n'
        ).encode()
        if len(buffer) >= FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self.flush)

    def _new_second(self, second: int) -> None:
        self._second = second
        self._seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))

    def _name_fields(self, exchange: Exchange) -> tuple[str, str]:
        """`"method":"GET",` and `"route":…,"service":…,"target":…,`: the values come
        from the config (and llhttp's list of methods), so they repeat; remembered."""
        key = (exchange.method, exchange.route_name, exchange.service_name, exchange.target_name)
        method = json_string(exchange.method.decode("latin-1"))
        route, service, target = (json_string(name) for name in key[1:])
        fields = (
            f'"method":{method},',
            f'"route":{route},"service":{service},"target":{target},',
        )
        _remember(self._names, key, fields)
        return fields

    def _agent_field(self, agent: bytes) -> str:
        """The user agent as a JSON string; there are few different ones: remembered."""
        field = json_string(agent.decode("latin-1"))
        _remember(self._agents, agent, field)
        return field

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buffer:
            return
        batch = bytes(self._buffer)
        self._buffer.clear()
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
                for chunk in [batch] if self._whole_batches else _whole_lines(batch):
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


def json_string(text: str) -> str:
    """`text` as a JSON string literal, escaped as orjson escapes it."""
    try:
        return orjson.dumps(text).decode()
    except TypeError:  # a lone surrogate, which orjson refuses: written as \\ud800
        return json.dumps(text)


def _remember(known: dict[Any, Any], key: Any, value: Any) -> None:
    if len(known) >= REMEMBERED:
        known.clear()
    known[key] = value
