"""Request mirroring: a copy of a share of a route's requests to a shadow service.

The copy leaves after the route's policies admitted the request (they run once, for
the primary) and before the primary's upstream call starts. Its answer is read and
thrown away; its failures and latency are counted and never reach the client: the
mirror has its own connection, its own timer, and nothing of the client's connection
(no back-pressure either way — a shadow that reads slowly has its bytes buffered by
the kernel and the transport, bounded by `max_body` per request and `max_in_flight`
per route).

A body that has fully arrived is copied at once; one still arriving is copied chunk by
chunk as the primary receives it (`RequestBody.tee`) and the mirror leaves when it is
complete. Bodies over `max_body` (by Content-Length, or once they grow past it) are
not mirrored.
"""

from __future__ import annotations

import asyncio
import random
import time
from bisect import bisect_left
from typing import TYPE_CHECKING

import structlog

from potok.http.http11 import first_header
from potok.upstream.connection import DiscardingListener
from potok.upstream.dial import TlsFailure, dial

if TYPE_CHECKING:
    from potok.exchange import Exchange
    from potok.observability.metrics import MetricsRegistry
    from potok.traffic.config import MirrorConfig
    from potok.upstream.connection import UpstreamConnection
    from potok.upstream.request import RequestHeadBuilder
    from potok.upstream.service import Service
    from potok.upstream.target import Target

log = structlog.get_logger("potok.mirror")

# What happened to the copies: answered (any status), failed (connect, reset, a 5xx),
# timeout, busy (max_in_flight reached), too_large (over max_body), skipped (an
# upgrade: a WebSocket is never copied).
RESULTS = ("answered", "failed", "timeout", "busy", "too_large", "skipped")
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Mirror:
    """A route's mirror: sampling, the in-flight bound, the counters."""

    __slots__ = (
        "_build_head",
        "_counts",
        "_duration",
        "_header",
        "_loop",
        "_share",
        "in_flight",
        "max_body",
        "max_in_flight",
        "service",
        "timeout",
    )

    def __init__(
        self,
        config: MirrorConfig,
        service: Service,
        build_head: RequestHeadBuilder,
        route: str,
        registry: MetricsRegistry | None,
    ) -> None:
        self.service = service
        self._build_head = build_head
        self._share = config.percent / 100.0
        self._header = config.header.lower().encode() if config.header else None
        self.max_body = config.max_body
        self.max_in_flight = config.max_in_flight
        self.timeout = config.timeout
        self.in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        if registry is not None:
            counter = registry.counter(
                "mirror_requests_total",
                "Copies of requests sent to a route's shadow service, by what became of them.",
                ("route", "result"),
            )
            self._counts = {result: counter.cell((route, result)) for result in RESULTS}
            self._duration = registry.histogram(
                "mirror_duration_seconds",
                "Time from sending a mirrored request to the end of its answer.",
                ("route",),
                _BUCKETS,
            ).row((route,))
        else:
            self._counts = {result: [0.0] for result in RESULTS}
            self._duration = [0] * (len(_BUCKETS) + 1) + [0.0]

    def count(self, result: str) -> None:
        self._counts[result][0] += 1

    def observe(self, seconds: float) -> None:
        row = self._duration
        row[bisect_left(_BUCKETS, seconds)] += 1
        row[-1] += seconds

    def maybe_copy(self, exchange: Exchange) -> None:
        """Called once the request is admitted, before its own upstream call."""
        if self._share < 1.0 and random.random() >= self._share:
            return
        if self._header is not None and first_header(exchange.headers, self._header) is None:
            return
        if exchange.upgrade is not None:
            self.count("skipped")
            return
        length = exchange.content_length
        if (
            length is not None and length > self.max_body
        ) or exchange.body.received > self.max_body:
            self.count("too_large")
            return
        if self.in_flight >= self.max_in_flight:
            self.count("busy")
            return
        body = exchange.body
        if body.complete:
            whole = body.buffered_bytes()
            if whole is None:  # already streamed away (cannot happen before the call)
                self.count("skipped")
                return
            self._send(exchange, whole)
        else:
            self.in_flight += 1  # held from now: the body may take a while
            body.tee = _BodyCopy(self, exchange)

    def _send(self, exchange: Exchange, body: bytes, held: bool = False) -> None:
        if not held:
            self.in_flight += 1
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        target = self.service.choose([])
        head = self._build_head(exchange, target)
        MirrorCall(
            self, target, head, body, head_request=exchange.method == b"HEAD", loop=self._loop
        ).start()


class _BodyCopy:
    """Collects a body still arriving, up to the mirror's limit (a `BodyTee`)."""

    __slots__ = ("_chunks", "_exchange", "_mirror", "_size")

    def __init__(self, mirror: Mirror, exchange: Exchange) -> None:
        self._mirror = mirror
        self._exchange = exchange
        self._chunks: list[bytes] | None = []
        self._size = 0

    def take(self, data: bytes) -> None:
        if self._chunks is None:
            return
        self._size += len(data)
        if self._size > self._mirror.max_body:
            self._chunks = None
            self._mirror.in_flight -= 1
            self._mirror.count("too_large")
            return
        self._chunks.append(data)

    def done(self) -> None:
        if self._chunks is None:
            return
        chunks, self._chunks = self._chunks, None
        self._exchange.body.tee = None
        self._mirror._send(self._exchange, b"".join(chunks), held=True)


class MirrorCall(DiscardingListener):
    """One copy on the wire; its answer is read and discarded (a `ResponseListener`)."""

    __slots__ = (
        "_body",
        "_connection",
        "_done",
        "_head",
        "_head_request",
        "_loop",
        "_mirror",
        "_sent_at",
        "_target",
        "_timer",
    )

    def __init__(
        self,
        mirror: Mirror,
        target: Target,
        head: bytes,
        body: bytes,
        *,
        head_request: bool,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__()
        self._mirror = mirror
        self._target = target
        self._head = head
        self._body = body
        self._head_request = head_request
        self._loop = loop
        self._connection: UpstreamConnection | None = None
        self._done = False
        self._sent_at = time.perf_counter()
        self._timer: asyncio.TimerHandle | None = loop.call_later(mirror.timeout, self._timed_out)

    def start(self) -> None:
        connection = self._target.pool.acquire()
        if connection is not None:
            self._write(connection)
        else:
            self._loop.create_task(self._connect())

    async def _connect(self) -> None:
        target = self._target
        service = self._mirror.service
        try:
            connection = await dial(target, service.connect_timeout, service.connect_timer)
        except (OSError, TimeoutError, TlsFailure) as exc:
            self._end("failed", f"cannot connect to the shadow {target.name}: {exc}")
            return
        if self._done:
            connection.close()
            return
        self._write(connection)

    def _write(self, connection: UpstreamConnection) -> None:
        self._connection = connection
        connection.send_request(self, self._head, head_request=self._head_request, chunked=False)
        if self._body:
            connection.write_body(self._body)
        self._body = b""

    def _timed_out(self) -> None:
        self._timer = None
        if self._connection is not None:
            self._connection.abort()
            self._connection = None
        self._end("timeout", "the shadow did not answer in time")

    def _end(self, result: str, detail: str = "") -> None:
        if self._done:
            return
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        mirror = self._mirror
        mirror.in_flight -= 1
        mirror.count(result)
        mirror.observe(time.perf_counter() - self._sent_at)
        if detail:
            log.debug("mirrored request", result=result, detail=detail)

    # ResponseListener (the rest: DiscardingListener) --------------------------------

    def response_complete(self, reusable: bool) -> None:
        connection = self._connection
        self._connection = None
        if connection is not None:
            if reusable and not self._done:
                self._target.pool.release(connection)
            else:
                connection.close()
        self._end("failed" if self.status >= 500 else "answered")

    def response_switching(self, headers: list[tuple[bytes, bytes]], early: bytes) -> None:
        if self._connection is not None:
            self._connection.abort()
            self._connection = None
        self._end("failed", "the shadow switched protocols")

    def upstream_failed(self, reason: str, before_response: bool) -> None:
        self._connection = None
        self._end("failed", reason)
