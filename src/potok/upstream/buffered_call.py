"""One request to a service whose whole answer is wanted in memory: an aggregated
route's calls (traffic/aggregate.py) and a webhook's forward (webhooks/upstream_call.py).

Through the service's own targets, balancer, keep-alive pools, circuit breaker, bulkhead,
target health, retries (with their budget and backoff) and upstream metrics, on the same
`UpstreamConnection`s as the proxy: what a proxied request would tell the breaker and
the targets' health, this tells them too. The proxy's `ProxyCall` streams a client's
request and answer with callbacks; here nobody streams, so it is a coroutine: attempts
awaited one after the other, within one deadline for the whole call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from potok.upstream.bulkhead import BulkheadFull
from potok.upstream.connection import DiscardingListener
from potok.upstream.dial import TlsFailure, dial

if TYPE_CHECKING:
    from potok.observability.tracing.trace import CallSpan, RequestTrace
    from potok.upstream.connection import UpstreamConnection
    from potok.upstream.retry import RetryPolicy
    from potok.upstream.service import Service
    from potok.upstream.target import Target

# The head of one attempt, for its target and the trace context lines it carries.
HeadBuilder = Callable[["Target", bytes], bytes]


class CallFailed(Exception):
    """No usable answer. `kind`: connect, timeout, reset, breaker_open, bulkhead_full or
    too_large; `status` is the gateway's answer for it had it proxied the request."""

    def __init__(
        self, kind: str, detail: str, retry_after: float = 0.0, before_response: bool = True
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.retry_after = retry_after  # breaker_open: when it lets a probe through
        self.before_response = before_response

    @property
    def status(self) -> int:
        if self.kind in ("breaker_open", "bulkhead_full"):
            return 503
        return 504 if self.kind == "timeout" else 502


class Answer:
    """A complete response: status, headers (hop-by-hop ones removed) and body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Buffering(DiscardingListener):
    """Collects one response, up to `limit` body bytes, for the coroutine awaiting it."""

    __slots__ = ("chunks", "future", "headers", "limit", "size")

    def __init__(self, future: asyncio.Future[bool], limit: int | None) -> None:
        super().__init__()
        self.future = future
        self.limit = limit  # None: the body is read and dropped
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0

    def response_head(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        length: int | None,
        has_body: bool,
    ) -> None:
        self.status = status
        self.headers = headers
        if self.limit is not None and length is not None and length > self.limit:
            self._too_large(length)

    def response_body(self, data: bytes) -> None:
        if self.limit is None or self.future.done():
            return
        self.size += len(data)
        if self.size > self.limit:
            self._too_large(self.size)
            return
        self.chunks.append(data)

    def _too_large(self, size: int) -> None:
        self.chunks = []
        if not self.future.done():
            self.future.set_exception(
                CallFailed(
                    "too_large",
                    f"the answer's body ({size} bytes or more) is over the {self.limit} allowed",
                    before_response=False,
                )
            )

    def response_complete(self, reusable: bool) -> None:
        if not self.future.done():
            self.future.set_result(reusable)

    def response_switching(self, headers: list[tuple[bytes, bytes]], early: bytes) -> None:
        if not self.future.done():
            self.future.set_exception(CallFailed("reset", "the service switched protocols"))

    def upstream_failed(self, reason: str, before_response: bool) -> None:
        if not self.future.done():
            self.future.set_exception(CallFailed("reset", reason, before_response=before_response))


class BufferedCall:
    """One call: breaker, bulkhead, attempts with retries, the verdicts they earn."""

    __slots__ = (
        "_admitted",
        "_body",
        "_build_head",
        "_bulkhead_held",
        "_deadline",
        "_head_request",
        "_limit",
        "_method",
        "_retry",
        "_retry_charged",
        "_service",
        "_trace",
        "_trace_lines",
        "_tried",
        "attempts",
    )

    def __init__(
        self,
        service: Service,
        method: str,
        build_head: HeadBuilder,
        body: bytes = b"",
        *,
        within: float,
        max_body: int | None,
        retry: RetryPolicy | None,
        trace: RequestTrace | None = None,
        trace_lines: bytes = b"",
    ) -> None:
        self._service = service
        self._method = method
        self._head_request = method == "HEAD"
        self._build_head = build_head
        self._body = body
        self._deadline = time.perf_counter() + within
        self._limit = max_body
        self._retry = retry
        self._trace = trace
        self._trace_lines = trace_lines  # sent when the call is not recorded
        self._tried: list[Target] = []
        self._admitted = False
        self._bulkhead_held = False
        self._retry_charged = False
        self.attempts = 0

    async def run(self) -> Answer:
        """The answer (any status), or CallFailed; cancelling it cleans up after it."""
        service = self._service
        breaker = service.breaker
        if breaker is not None:
            if not breaker.allow():
                raise self._breaker_open()
            self._admitted = True
        service.retry_budget.active_requests += 1
        try:
            await self._take_slot()
            return await self._attempts()
        finally:
            service.retry_budget.active_requests -= 1
            if self._retry_charged and self._retry is not None:
                self._retry.budget.active_retries -= 1
            if self._bulkhead_held and service.bulkhead is not None:
                service.bulkhead.release()
            if self._admitted and breaker is not None:
                breaker.record_cancelled()  # ended without a verdict (cancelled)

    def _breaker_open(self) -> CallFailed:
        service = self._service
        service.note_breaker_rejection()
        wait = service.breaker.retry_after() if service.breaker is not None else 0.0
        return CallFailed("breaker_open", f"{service.name}'s circuit breaker is open", wait)

    async def _take_slot(self) -> None:
        bulkhead = self._service.bulkhead
        if bulkhead is None:
            return
        if not bulkhead.try_acquire():
            try:
                async with asyncio.timeout(max(0.0, self._deadline - time.perf_counter())):
                    await bulkhead.acquire()
            except (BulkheadFull, TimeoutError) as exc:
                self._service.note_bulkhead_rejection()
                raise CallFailed(
                    "bulkhead_full", f"{self._service.name} is at its concurrency limit: {exc}"
                ) from None
        self._bulkhead_held = True

    async def _attempts(self) -> Answer:
        service = self._service
        while True:
            target = service.choose(self._tried)
            self._tried.append(target)
            self.attempts += 1
            try:
                answer = await self._attempt(target)
            except CallFailed as exc:
                self._judge_attempt(target, False, exc.kind)
                if exc.kind != "too_large" and self._may_retry(
                    exc.kind, sent=exc.kind != "connect"
                ):
                    await self._back_off(exc.kind)
                    continue
                if exc.kind == "too_large":
                    self._judge_call(True)  # the service answered; the answer is the problem
                else:
                    self._judge_call(False, exc.kind)
                raise
            if answer.status >= 500:
                self._judge_attempt(target, False, "5xx", answer.status)
                retry = self._retry
                if (
                    retry is not None
                    and answer.status in retry.on_status
                    and self._may_retry(str(answer.status), sent=True)
                ):
                    await self._back_off(str(answer.status))
                    continue
                self._judge_call(False, "5xx", answer.status)
            else:
                self._judge_attempt(target, True)
                self._judge_call(True)
            return answer

    async def _attempt(self, target: Target) -> Answer:
        """One attempt on `target`: a pooled connection (once more on a fresh one if the
        service had closed it meanwhile), else a new one."""
        trace = self._trace
        span = trace.begin_call() if trace is not None else None
        target.inflight += 1
        status = 0
        error: str | None = None
        try:
            pooled = target.pool.acquire()
            if pooled is not None:
                try:
                    answer = await self._send(pooled, target, span)
                except CallFailed as exc:
                    stale = exc.kind == "reset" and exc.before_response
                    if not stale or pooled.requests_sent <= 1:
                        raise
                else:
                    status = answer.status
                    return answer
            answer = await self._send(await self._connect(target), target, span)
            status = answer.status
            return answer
        except CallFailed as exc:
            error = exc.kind
            raise
        finally:
            target.inflight -= 1
            if trace is not None and span is not None:
                trace.end_call(
                    span,
                    self._method,
                    target=target,
                    status=status,
                    error=error,
                    resend=self.attempts - 1,
                )

    async def _connect(self, target: Target) -> UpstreamConnection:
        service = self._service
        remaining = self._deadline - time.perf_counter()
        if remaining <= 0:
            raise CallFailed("timeout", f"{service.name} did not answer in time")
        try:
            return await dial(
                target, min(service.connect_timeout, remaining), service.connect_timer
            )
        except TlsFailure as failure:
            service.note_tls_failure(target, failure)
            raise CallFailed(
                "connect", f"TLS handshake with {target.name} failed: {failure.detail}"
            ) from None
        except TimeoutError:
            raise CallFailed("timeout", f"connecting to {target.name} timed out") from None
        except OSError as exc:
            if isinstance(exc, ConnectionRefusedError) and target.health is not None:
                target.health.eject_now("connection refused")
            raise CallFailed(
                "connect", f"cannot connect to {target.name}: {exc.strerror or exc}"
            ) from None

    async def _send(
        self, connection: UpstreamConnection, target: Target, span: CallSpan | None
    ) -> Answer:
        """The request on `connection` and its whole answer, within the service's response
        timeout and the call's deadline: one timer on the future (cheaper than a timeout
        context per await: this is the per-call hot path)."""
        wait = min(self._service.response_timeout, self._deadline - time.perf_counter())
        if wait <= 0:
            target.pool.release(connection)
            raise CallFailed("timeout", f"{self._service.name} did not answer in time")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        listener = _Buffering(future, self._limit)
        head = self._build_head(target, span[1] if span is not None else self._trace_lines)
        connection.send_request(listener, head, head_request=self._head_request, chunked=False)
        if self._body:
            connection.write_body(self._body)
        timer = loop.call_later(wait, _expire, future, target, wait)
        try:
            reusable = await future
        except BaseException:  # a failure, its timer, or the call cancelled
            connection.abort()
            raise
        finally:
            timer.cancel()
        if reusable:
            target.pool.release(connection)
        else:
            connection.close()
        return Answer(listener.status, listener.headers, b"".join(listener.chunks))

    # Retries and verdicts: as ProxyCall decides them -------------------------------------

    def _may_retry(self, reason: str, *, sent: bool) -> bool:
        retry = self._retry
        if retry is None or len(self._tried) >= retry.attempts:
            return False
        if sent and self._method.encode() not in retry.methods:
            return False  # sent, and not safe to send again
        if self._deadline - time.perf_counter() <= 0.001:
            return False
        if self._service.has_healthy_untried(self._tried):
            return True
        if not retry.budget.can_retry():
            self._service.note_budget_exhausted()
            return False
        if not self._retry_charged:
            retry.budget.active_retries += 1
            self._retry_charged = True
        return True

    async def _back_off(self, reason: str) -> None:
        retry = self._retry
        assert retry is not None
        self._service.note_retry(reason)
        remaining = self._deadline - time.perf_counter()
        await asyncio.sleep(min(retry.backoff.delay(len(self._tried) - 1), remaining * 0.9))
        breaker = self._service.breaker
        if breaker is not None and breaker.retry_after() > 0:
            raise self._breaker_open()  # other requests tripped it meanwhile

    def _judge_attempt(self, target: Target, ok: bool, kind: str = "", status: int = 0) -> None:
        self._service.judge_attempt(target, ok, kind, status)

    def _judge_call(self, ok: bool, kind: str = "", status: int = 0) -> None:
        if self._admitted:
            self._admitted = False
            self._service.judge_call(self._tried, ok, kind, status)


def _expire(future: asyncio.Future[bool], target: Target, seconds: float) -> None:
    if not future.done():
        future.set_exception(
            CallFailed("timeout", f"{target.name} did not answer within {seconds:.3g}s")
        )
