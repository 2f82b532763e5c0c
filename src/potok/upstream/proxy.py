"""Forwarding one request to a service and streaming the answer back: the upstream stage.

balancer -> circuit breaker -> (bulkhead) -> attempt, retried while safe -> response.

Everything here is driven by callbacks from the two connections; a task is
created only to open a new upstream connection or to wait for a bulkhead slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from potok.upstream.bulkhead import BulkheadFull
from potok.upstream.dial import TlsFailure, dial

if TYPE_CHECKING:
    from potok.exchange import Exchange, ResponseSink
    from potok.upstream.connection import UpstreamConnection
    from potok.upstream.retry import RetryPolicy
    from potok.upstream.service import Service
    from potok.upstream.target import Target

log = structlog.get_logger("potok.upstream")

# Methods whose request may be replayed on a fresh connection when a pooled one
# turns out to have been closed by the upstream before answering.
_REPLAYABLE = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})

ResponseHook = Callable[["Exchange", list[tuple[bytes, bytes]]], list[tuple[bytes, bytes]]]
HeadBuilder = Callable[["Exchange", "Target"], bytes]


class Fallback:
    """A route's canned answer while its service's breaker is open."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: bytes,
        headers: tuple[tuple[bytes, bytes], ...],
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers


class ProxyCall:
    """One request's journey to the service and back (a `ResponseListener`)."""

    __slots__ = (
        "_admitted",
        "_body_mark",
        "_build_head",
        "_bulkhead_held",
        "_client_paused",
        "_connection",
        "_done",
        "_fallback",
        "_flush",
        "_loop",
        "_replay",
        "_response_hooks",
        "_retry",
        "_retry_charged",
        "_sent_at",
        "_service",
        "_sink",
        "_stale_replayed",
        "_target",
        "_timer",
        "_tried",
        "exchange",
    )

    def __init__(
        self,
        exchange: Exchange,
        service: Service,
        build_head: HeadBuilder,
        response_hooks: tuple[ResponseHook, ...],
        *,
        retry: RetryPolicy | None,
        fallback: Fallback | None,
        sink: ResponseSink | None = None,
    ) -> None:
        self.exchange = exchange
        # Where the upstream's answer goes: the route's response filters, or the client.
        self._sink: ResponseSink = exchange if sink is None else sink
        # Called after every read from the upstream: without filters, the responder's own
        # flush (no extra call per chunk through Exchange.flush).
        self._flush = exchange.connection.flush if sink is None else sink.flush
        self._service = service
        self._build_head = build_head
        self._response_hooks = response_hooks
        self._retry = retry
        self._fallback = fallback
        self._loop = exchange.connection.loop
        self._connection: UpstreamConnection | None = None
        self._target: Target | None = None
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._tried: list[Target] = []
        self._replay: bytes | None = None  # the body, kept when the request may be retried
        self._sent_at = 0.0
        self._done = False
        self._admitted = False  # took a breaker slot (half-open probes are counted)
        self._bulkhead_held = False
        self._retry_charged = False  # counted once in the retry budget's retries in flight
        self._body_mark = 0  # request body bytes received when the response timer was armed
        self._stale_replayed = False
        # Holds one pause of the client's reading (the upstream's write buffer was full):
        # undone when the upstream drains, or when this call lets go of the connection.
        self._client_paused = False

    # Start -------------------------------------------------------------------------

    def start(self) -> None:
        exchange = self.exchange
        service = self._service
        exchange.on_cancel = self.cancel
        service.retry_budget.active_requests += 1
        breaker = service.breaker
        if breaker is not None:
            if not breaker.allow():
                self._breaker_open()
                return
            self._admitted = True
        retry = self._retry
        if retry is not None and retry.is_safe(exchange.method, exchange.headers):
            body = exchange.body
            if not body.received and body.complete:
                self._replay = b""
            elif body.received <= retry.max_body_bytes:
                self._replay = body.buffered_bytes()
        bulkhead = service.bulkhead
        if bulkhead is not None:
            if not bulkhead.try_acquire():
                self._loop.create_task(self._wait_for_slot())
                return
            self._bulkhead_held = True
        self._attempt()

    async def _wait_for_slot(self) -> None:
        bulkhead = self._service.bulkhead
        assert bulkhead is not None
        try:
            await bulkhead.acquire()
        except BulkheadFull as exc:
            self._service.note_bulkhead_rejection()
            self._fail(
                503, f"{self._service.name} is at its concurrency limit: {exc}", retry_after=1
            )
            return
        self._bulkhead_held = True
        if self._done:
            self._release_slot()
            return
        self._attempt()

    def _attempt(self) -> None:
        target = self._service.choose(self._tried)
        self._target = target
        self._tried.append(target)
        exchange = self.exchange
        exchange.target_name = target.name
        target.inflight += 1
        trace = exchange.trace
        if trace is not None:
            resend = len(self._tried) - 1
            exchange.trace_lines = trace.begin_attempt(exchange.method, target, resend)
        connection = target.pool.acquire()
        if connection is not None:
            self._send(connection)
        else:
            self._loop.create_task(self._connect(target))

    async def _connect(self, target: Target) -> None:
        service = self._service
        try:
            connection = await dial(target, service.connect_timeout, service.connect_timer)
        except TlsFailure as failure:
            # Counted like a refused connect (breaker, ejection): the target cannot be
            # used as configured, whichever end is wrong. A 502, the handshake timeout
            # included: the port answered, but not with the TLS it should speak.
            service.note_tls_failure(target, failure)
            self._attempt_failed(
                "connect",
                502,
                f"TLS handshake with {target.name} failed: {failure.detail}",
                sent=False,
            )
            return
        except TimeoutError:
            self._attempt_failed(
                "timeout", 504, f"connecting to {target.name} timed out", sent=False
            )
            return
        except OSError as exc:
            reason = f"cannot connect to {target.name}: {exc.strerror or exc}"
            if isinstance(exc, ConnectionRefusedError) and target.health is not None:
                # Nothing listens there: no second opinion needed, out at once.
                target.health.eject_now("connection refused")
            self._attempt_failed("connect", 502, reason, sent=False)
            return
        if self._done:
            connection.close()  # the client left or the request timed out meanwhile
            return
        self._send(connection)

    def _send(self, connection: UpstreamConnection) -> None:
        exchange = self.exchange
        self._connection = connection
        body = exchange.body
        replay = self._replay
        chunked = replay is None and exchange.content_length is None and not body.complete
        head = self._build_head(exchange, connection.target)
        connection.send_request(
            self, head, head_request=exchange.method == b"HEAD", chunked=chunked
        )
        exchange.producer = connection
        if exchange.connection.write_paused:
            connection.pause_reading()
        self._sent_at = time.perf_counter()
        self._arm_response_timer()
        if replay is not None:
            if replay:
                connection.write_body(replay)
        elif not body.complete or body.received:
            body.attach(connection)

    # ResponseListener ---------------------------------------------------------------

    def response_head(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        length: int | None,
        has_body: bool,
    ) -> None:
        self._cancel_timer()
        trace = self.exchange.trace
        if trace is not None:
            trace.attempt_status = status
        if status >= 500:
            retry = self._retry
            if (
                retry is not None
                and self._replay is not None  # safe to send again, body kept
                and status in retry.on_status
                and self._may_retry(str(status))
            ):
                self._judge_attempt(False, "5xx", status)
                self._drop_connection()
                self._retry_later(str(status))
                return
            self._judge_attempt(False, "5xx", status)
            self._judge_call(False, "5xx", status)
        else:
            self._judge_attempt(True)
            self._judge_call(True)
        exchange = self.exchange
        for hook in self._response_hooks:
            headers = hook(exchange, headers)
        self._sink.send_head(status, headers, reason=reason, length=length, body=has_body)

    def response_informational(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.exchange.send_informational(status, headers)

    def response_body(self, data: bytes) -> None:
        self._sink.send_body(data)

    def response_complete(self, reusable: bool) -> None:
        connection = self._connection
        self._finish_upstream()
        if connection is not None:
            if reusable and self.exchange.body.complete:
                connection.target.pool.release(connection)
            else:
                connection.close()
        self._sink.end()

    def response_switching(self, headers: list[tuple[bytes, bytes]], early: bytes) -> None:
        connection = self._connection
        if connection is None:
            return
        self._judge_attempt(True)
        self._judge_call(True)
        self._finish_upstream()
        exchange = self.exchange
        client = exchange.connection
        connection.listener = None
        connection.start_tunnel(client.transport, client.touch)
        exchange.switch_protocols(
            [*headers, (b"Connection", b"upgrade")],
            connection,
            idle_timeout=exchange.route.tunnel_idle if exchange.route is not None else None,
        )
        if early:
            client.transport.write(early)

    def upstream_failed(self, reason: str, before_response: bool) -> None:
        connection = self._connection
        exchange = self.exchange
        if not before_response:
            log.warning(
                "upstream response cut short", reason=reason, request_id=exchange.request_id
            )
            self._finish_upstream()
            self._sink.abort(reason)
            return
        if (
            connection is not None
            and connection.requests_sent > 1
            and not self._stale_replayed
            and exchange.method in _REPLAYABLE
            and (
                self._replay is not None or (exchange.body.complete and not exchange.body.received)
            )
            and not self._done
        ):
            # A pooled connection the upstream had already closed: replay once, at once,
            # on a fresh one. Not a failure of the target, not a counted retry.
            self._stale_replayed = True
            self._cancel_timer()
            self._connection = None
            target = connection.target
            self._loop.create_task(self._connect(target))
            return
        self._attempt_failed("reset", 502, reason, sent=True)

    def flush_client(self) -> None:
        self._flush()

    def pause_client_reading(self) -> None:
        if not self._client_paused and not self._done:
            self._client_paused = True
            self.exchange.pause_reading()

    def resume_client_reading(self) -> None:
        if self._client_paused:
            self._client_paused = False
            self.exchange.resume_reading()

    # Failures and retries ------------------------------------------------------------

    def _attempt_failed(self, kind: str, status: int, detail: str, *, sent: bool) -> None:
        if self._done:
            return
        trace = self.exchange.trace
        if trace is not None:
            trace.attempt_error = kind
        connection = self._connection
        if (
            kind == "reset"
            and not self.exchange.body.complete
            and not (connection is not None and connection.write_paused)
        ):
            # The upstream gave up while the client's body was still arriving (and it was
            # reading it): whose fault that is cannot be told (an upstream's own body-read
            # timeout looks the same), so it counts against neither target nor service.
            self._fail(status, detail)
            return
        self._judge_attempt(False, kind)
        # Nothing sent (connect failed, body still unread): any request may go again.
        # Once sent, only a safe request whose body was kept for replay.
        if (not sent or self._replay is not None) and self._may_retry(kind):
            self._drop_connection()
            self._retry_later(kind)
            return
        self._judge_call(False, kind)
        self._fail(status, detail)

    def _may_retry(self, reason: str) -> bool:
        retry = self._retry
        if retry is None or self._done or len(self._tried) >= retry.attempts:
            return False
        if self._service.has_healthy_untried(self._tried):
            # The budget guards a failing service against retry storms. A retry that can
            # move to a target serving well shifts load off a failing one instead of
            # multiplying it: not held back, not counted (waiting or on the wire).
            return True
        if not retry.budget.can_retry():
            self._service.note_budget_exhausted()
            return False
        if not self._retry_charged:  # a request that is retrying counts once, backoff included
            retry.budget.active_retries += 1
            self._retry_charged = True
        return True

    def _retry_later(self, reason: str) -> None:
        retry = self._retry
        assert retry is not None
        target = self._target
        if target is not None:
            target.inflight -= 1
            self._target = None
        trace = self.exchange.trace
        if trace is not None:
            trace.end_attempt()
        delay = retry.backoff.delay(len(self._tried) - 1)
        remaining = self.exchange.deadline - time.perf_counter()
        if remaining <= 0.001:
            return  # the route's deadline answers (504) any moment now
        self._service.note_retry(reason)
        self._timer = self._loop.call_later(min(delay, remaining * 0.9), self._retry_now)

    def _retry_now(self) -> None:
        self._timer = None
        if self._done:
            return
        breaker = self._service.breaker
        if breaker is not None and breaker.retry_after() > 0:
            self._breaker_open()  # other requests tripped it meanwhile: stop here
            return
        self._attempt()

    def _judge_attempt(self, ok: bool, kind: str = "", status: int = 0) -> None:
        """Tell the target's health how this attempt went (passive ejection)."""
        if self._target is not None:
            self._service.judge_attempt(self._target, ok, kind, status)

    def _judge_call(self, ok: bool, kind: str = "", status: int = 0) -> None:
        """Tell the service's breaker how the whole call went, retries included."""
        if self._admitted:
            self._admitted = False
            self._service.judge_call(self._tried, ok, kind, status)

    def _breaker_open(self) -> None:
        exchange = self.exchange
        service = self._service
        service.note_breaker_rejection()
        fallback = self._fallback
        self._finish_upstream()
        exchange.body.detach()
        if self._sink is not exchange and self._sink.unavailable(503, True):
            return  # a response filter answered instead (a cache's last good response)
        if fallback is not None:
            exchange.respond(
                fallback.status, fallback.body, fallback.content_type, fallback.headers
            )
            return
        wait = service.breaker.retry_after() if service.breaker is not None else 0.0
        exchange.problem(
            503,
            f"{service.name} is failing; its circuit breaker is open",
            headers=((b"Retry-After", b"%d" % max(1, round(wait))),),
        )

    def _arm_response_timer(self) -> None:
        self._body_mark = self.exchange.body.received
        self._timer = self._loop.call_later(
            self._service.response_timeout, self._response_timed_out
        )

    def _response_timed_out(self) -> None:
        self._timer = None
        if self._done:
            return
        body = self.exchange.body
        connection = self._connection
        upstream_stalled = connection is not None and connection.write_paused
        if not upstream_stalled:
            if body.received > self._body_mark:
                # The client is still sending: the wait for an answer starts from its
                # last bytes, not from the head.
                self._arm_response_timer()
                return
            if not body.complete:
                self._client_stalled()
                return
        seconds = self._service.response_timeout
        self._attempt_failed(
            "timeout", 504, f"{self._service.name} did not answer within {seconds:g}s", sent=True
        )

    def _client_stalled(self) -> None:
        """The client stopped sending its body: its failure, not the upstream's.

        408, the upstream attempt aborted; nothing counts against the target, the
        breaker or the retry budget, so slow or vanishing clients cannot open a breaker.
        """
        exchange = self.exchange
        self._drop_connection()
        self._finish_upstream()
        exchange.body.detach()
        seconds = self._service.response_timeout
        log.info(
            "request body stalled",
            service=self._service.name,
            received=exchange.body.received,
            request_id=exchange.request_id,
        )
        exchange.problem(408, f"the request body did not arrive within {seconds:g}s")

    def _fail(self, status: int, detail: str, retry_after: int = 0) -> None:
        if self._done:
            return
        exchange = self.exchange
        self._drop_connection()
        self._finish_upstream()
        exchange.body.detach()
        log.warning(
            "upstream request failed",
            status=status,
            detail=detail,
            service=self._service.name,
            attempts=len(self._tried),
            request_id=exchange.request_id,
        )
        if exchange.response_started:
            self._sink.abort(detail)
        elif self._sink is exchange or not self._sink.unavailable(status, False):
            headers = ((b"Retry-After", b"%d" % retry_after),) if retry_after else ()
            exchange.problem(status, detail, headers=headers)

    # Ending ----------------------------------------------------------------------

    def cancel(self) -> None:
        """The client went away or the request deadline passed: drop the upstream side."""
        if self._done:
            return
        self._drop_connection()
        self._finish_upstream()

    def _drop_connection(self) -> None:
        self._cancel_timer()
        connection = self._connection
        self._connection = None
        self.exchange.producer = None
        self.resume_client_reading()  # the dropped connection's full buffer no longer matters
        if connection is not None:
            connection.abort()

    def _finish_upstream(self) -> None:
        if self._done:
            return
        self._done = True
        self._cancel_timer()
        if self._admitted and self._service.breaker is not None:
            # Ended without a verdict (client left, deadline, bulkhead full): free the slot.
            self._service.breaker.record_cancelled()
            self._admitted = False
        # The connection may still be draining the body into a slow upstream (answered
        # early) and goes back to the pool or closes: its resume would reach nobody.
        self.resume_client_reading()
        exchange = self.exchange
        exchange.on_cancel = None
        exchange.producer = None
        trace = exchange.trace
        if trace is not None:
            trace.end_attempt()
        if self._sent_at:
            exchange.upstream_duration = time.perf_counter() - self._sent_at
        if self._target is not None:
            self._target.inflight -= 1
            self._target = None
        if self._retry_charged and self._retry is not None:
            self._retry.budget.active_retries -= 1
            self._retry_charged = False
        self._service.retry_budget.active_requests -= 1
        self._release_slot()

    def _release_slot(self) -> None:
        if self._bulkhead_held and self._service.bulkhead is not None:
            self._bulkhead_held = False
            self._service.bulkhead.release()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
