"""One gRPC call relayed to its service over HTTP/2: the gRPC route's upstream stage.

The client's stream (an `Http2Stream`) and an upstream stream (`H2Stream` from the
service's `H2Pool` for the chosen target) are joined in one task:

- request DATA goes up as it arrives (`RequestBody.read`, which pauses the client's
  window once it piles up) and waits for the upstream's window (`H2Stream.send`);
- response DATA comes down as the client takes it: each chunk read from the upstream
  opens its window again, and reading stops while the client's window is shut
  (`Exchange.drain`), so a slow client stops the server, not the gateway's memory;
- the response head and the trailers (`grpc-status`, `grpc-message`, custom trailing
  metadata, `grpc-status-details-bin`) are relayed as they are; a Trailers-Only
  answer stays one;
- the client's reset (RST_STREAM, gone) cancels the upstream stream (RST_STREAM CANCEL),
  and an upstream reset reaches the client with the same code;
- the deadline is the route's timeout or `grpc-timeout`, whichever ends first: when it
  passes, the upstream stream is cancelled and the client gets DEADLINE_EXCEEDED, and
  what is left of it goes upstream in `grpc-timeout`.

An attempt is retried (another target, the route's retry rules and budget) only when
the upstream did not process the stream — no connection, REFUSED_STREAM, a GOAWAY
before it — and the whole request can be sent again: a body that had fully arrived
before the call started (unary and small client-streaming calls) is kept for that; a
streaming body already partly sent upstream is not, and such a call fails UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from typing import TYPE_CHECKING

import structlog
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError
from hpack import NeverIndexedHeaderTuple

from potok.grpc import status
from potok.grpc.timeout import format_timeout
from potok.upstream.dial import classify
from potok.upstream.h2_client import H2Error, H2Stream, StreamReset

if TYPE_CHECKING:
    from potok.exchange import Exchange, Headers, ResponseHook
    from potok.http2.stream import Http2Stream
    from potok.upstream.retry import RetryPolicy
    from potok.upstream.service import Service
    from potok.upstream.target import Target

log = structlog.get_logger("potok.grpc")

# Request fields that are not the call's metadata: the pseudo-headers are rebuilt, and
# grpc-timeout is replaced by what is left of the deadline.
_NOT_FORWARDED = frozenset({b"grpc-timeout", b"te", b"host"})
# A whole request body up to this size is sent before the answer is read, in the call's
# own task; a larger one (it may wait for the upstream's window) gets a task beside it.
_INLINE_BODY = 16 * 1024
# Response head fields that do not pass (the client's stream frames its own response).
_HEAD_DROPPED = frozenset({b"content-length", b"connection", b"transfer-encoding"})


class Unprocessed(Exception):
    """The attempt failed before the upstream processed the stream: it may go again."""

    def __init__(self, kind: str, http_status: int, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.http_status = http_status
        self.detail = detail


class GrpcCall:
    """One call's journey to the service and back."""

    __slots__ = (
        "_admitted",
        "_authority",
        "_client",
        "_deadline",
        "_done",
        "_extra",
        "_grpc_timeout",
        "_hooks",
        "_loop",
        "_replay",
        "_retry",
        "_retry_charged",
        "_sent_at",
        "_service",
        "_stream",
        "_target",
        "_task",
        "_tried",
        "exchange",
    )

    def __init__(
        self,
        exchange: Exchange,
        client: Http2Stream,
        service: Service,
        *,
        extra: Headers,
        retry: RetryPolicy | None,
        hooks: tuple[ResponseHook, ...],
        deadline: float,
        grpc_timeout: bool,
        preserve_host: bool,
    ) -> None:
        self.exchange = exchange
        self._client = client
        self._service = service
        self._extra = extra  # static fields from the route (the service's API key)
        self._retry = retry
        self._hooks = hooks  # the route's response hooks (CORS, security headers...)
        self._deadline = deadline  # perf_counter time
        self._grpc_timeout = grpc_timeout  # the client gave one: forward the rest of it
        self._authority = exchange.host if preserve_host else None
        self._loop = client.loop
        self._task: asyncio.Task[None] | None = None
        self._stream: H2Stream | None = None
        self._target: Target | None = None
        self._tried: list[Target] = []
        self._replay: bytes | None = None
        self._sent_at = 0.0
        self._admitted = False
        self._retry_charged = False
        self._done = False

    # Start -------------------------------------------------------------------------

    def start(self) -> None:
        exchange = self.exchange
        service = self._service
        breaker = service.breaker
        if breaker is not None:
            if not breaker.allow():
                service.note_breaker_rejection()
                exchange.body.detach()
                exchange.problem(503, f"{service.name} is failing; its circuit breaker is open")
                return
            self._admitted = True
        service.retry_budget.active_requests += 1
        exchange.on_cancel = self.cancel
        # The call owns the deadline from here (the app's timer would answer HTTP-style).
        if exchange.timer is not None:
            exchange.timer.cancel()
        remaining = self._deadline - time.perf_counter()
        exchange.timer = self._loop.call_later(max(0.0, remaining), self._deadline_passed)
        self._replay = exchange.body.buffered_bytes()
        self._task = self._loop.create_task(self._run())

    async def _run(self) -> None:
        try:
            await self._call()
        except asyncio.CancelledError:
            pass  # the client left, or the deadline answered: `cancel` did the rest
        except ProtocolError:
            # The client's connection ended (its GOAWAY) before its streams were told.
            self.cancel()
        except Exception as exc:  # a bug must not leave the client's stream hanging
            if not self._done:
                self._finish()
                self.exchange.handler_failed(exc)
        finally:
            stream = self._stream
            if stream is not None and not stream.ended:
                stream.reset(ErrorCodes.CANCEL)

    # The attempts ---------------------------------------------------------------------

    async def _call(self) -> None:
        while True:
            try:
                stream = await self._open()
            except Unprocessed as failure:
                if await self._retrying(failure.kind):
                    continue
                self._judge_call(False, failure.kind)
                self._fail(failure.http_status, failure.detail)
                return
            self._stream = stream
            refused = await self._attempt(stream)
            if refused is None:
                return
            # REFUSED_STREAM, or a GOAWAY before the stream: the upstream did not process
            # it, and the whole request is kept: it may go again.
            self._stream = None
            if await self._retrying("reset"):
                continue
            self._judge_call(False, "reset")
            self._fail(503, f"{self._service.name} did not take the call: {refused}")
            return

    async def _retrying(self, kind: str) -> bool:
        """The attempt failed unprocessed: judged, and retried if the rules allow."""
        self._judge_attempt(False, kind)
        trace = self.exchange.trace
        if self._may_retry(kind):
            self._note_attempt_end(kind)
            await self._backoff()
            return True
        if trace is not None:
            trace.attempt_error = kind
        return False

    async def _attempt(self, stream: H2Stream) -> H2Error | None:
        """Send the request and relay the answer; the error if the upstream refused the
        stream unprocessed and the request could go again (else None: answered)."""
        replay = self._replay
        if replay is not None and len(replay) <= _INLINE_BODY:
            # A small whole body (a unary call): it fits the upstream's first window, so
            # it goes out at once, with no task of its own, before the answer is read.
            if replay:
                with contextlib.suppress(H2Error):  # failed: reading the response says how
                    await stream.send(replay, end_stream=True)
            return await self._relay(stream)
        sender = self._loop.create_task(self._send_body(stream))
        try:
            return await self._relay(stream)
        finally:
            if not sender.done():
                # Answered before the request ended (or the call ended): stop sending, and
                # close the stream on the upstream's side too.
                sender.cancel()
                if replay is None:
                    self.exchange.body.detach()
                stream.reset(ErrorCodes.CANCEL)

    async def _open(self) -> H2Stream:
        """An upstream stream with the request head sent, for a target not tried yet if
        there is one; raises Unprocessed when the upstream surely did not take it."""
        exchange = self.exchange
        service = self._service
        target = service.choose(self._tried)
        self._target = target
        self._tried.append(target)
        exchange.target_name = target.name
        target.inflight += 1
        trace = exchange.trace
        if trace is not None:
            exchange.trace_lines = trace.begin_attempt(b"POST", target, len(self._tried) - 1)
        pool = service.h2_pool(target)
        empty = self._replay == b""
        try:
            async with asyncio.timeout(service.connect_timeout):
                stream = await pool.request(
                    exchange.method,
                    exchange.upstream_path + exchange.query,
                    self._head(target),
                    end_stream=empty,
                    authority=self._authority,
                )
        except TimeoutError:
            raise Unprocessed("timeout", 503, f"connecting to {target.name} timed out") from None
        except H2Error as exc:
            # GOAWAY past it, or ALPN without h2: the upstream did not process the stream.
            raise Unprocessed("connect", 503, f"{target.name}: {exc}") from None
        except OSError as exc:
            if isinstance(exc, ssl.SSLError):
                failure = classify(exc, service.connect_timeout)
                service.note_tls_failure(target, failure)
                raise Unprocessed(
                    "connect", 503, f"TLS handshake with {target.name} failed: {failure.detail}"
                ) from None
            if isinstance(exc, ConnectionRefusedError) and target.health is not None:
                target.health.eject_now("connection refused")
            raise Unprocessed(
                "connect", 503, f"cannot connect to {target.name}: {exc.strerror or exc}"
            ) from None
        self._sent_at = time.perf_counter()
        return stream

    def _head(self, target: Target) -> Headers:
        """The call's metadata for the upstream, with the gateway's forwarding fields."""
        exchange = self.exchange
        fields: Headers = [
            (name, value) for name, value in exchange.headers if name not in _NOT_FORWARDED
        ]
        fields.append((b"te", b"trailers"))
        # Values new on every call are never indexed: entering them into HPACK's dynamic
        # table would evict useful entries and cost a table search on every call.
        if self._grpc_timeout:
            remaining = format_timeout(self._deadline - time.perf_counter())
            fields.append(NeverIndexedHeaderTuple(b"grpc-timeout", remaining))
        identity = exchange.identity
        if identity is not None and identity.upstream_lines:
            fields += _lines(identity.upstream_lines)
        fields.append((b"x-forwarded-for", exchange.forwarded_for or b""))
        fields.append((b"x-forwarded-proto", exchange.forwarded_proto or b"http"))
        if exchange.forwarded_host:
            fields.append((b"x-forwarded-host", exchange.forwarded_host))
        fields.append(NeverIndexedHeaderTuple(b"x-request-id", exchange.request_id.encode()))
        if exchange.trace_lines:
            fields += [NeverIndexedHeaderTuple(*pair) for pair in _lines(exchange.trace_lines)]
        fields += self._extra
        return fields

    async def _send_body(self, stream: H2Stream) -> None:
        """Request DATA up as it arrives; the client's window waits while the upstream's
        is shut (the body pauses the client's stream once enough piles up)."""
        try:
            replay = self._replay
            if replay is not None:
                await stream.send(replay, end_stream=True)
                return
            body = self.exchange.body
            while chunk := await body.read():
                await stream.send(chunk)
            await stream.end()
        except H2Error:
            pass  # the stream failed: the response side tells the client

    async def _relay(self, stream: H2Stream) -> H2Error | None:
        exchange = self.exchange
        client = self._client
        try:
            head = await stream.response()
        except H2Error as exc:
            if exc.retryable and self._replay is not None:
                return exc
            self._upstream_failed(exc, started=False)
            return None
        http_status = stream.status or 502
        trace = exchange.trace
        if trace is not None:
            trace.attempt_status = http_status
        ok = http_status < 500
        self._judge_attempt(ok, "5xx", http_status)
        self._judge_call(ok, "5xx", http_status)
        fields = [
            (name, value) for name, value in head if name[:1] != b":" and name not in _HEAD_DROPPED
        ]
        for hook in self._hooks:
            fields = hook(exchange, fields)
        trailers_only = stream.ended
        if trailers_only:
            _note_grpc_status(exchange, head)
        exchange.send_head(http_status, fields, length=None, body=not trailers_only)
        if trailers_only:
            self._finish()
            exchange.end()
            return None
        flush = client.flush
        try:
            while data := await stream.read():
                exchange.send_body(data)
                flush()
                if client.write_paused:
                    await client.drain()
        except H2Error as exc:
            self._upstream_failed(exc, started=True)
            return None
        trailers = stream.trailers or []
        _note_grpc_status(exchange, trailers)
        self._finish()
        client.end_with_trailers(exchange, trailers)
        return None

    # Failures -------------------------------------------------------------------------

    def _upstream_failed(self, exc: H2Error, *, started: bool) -> None:
        exchange = self.exchange
        trace = exchange.trace
        if trace is not None:
            trace.attempt_error = "reset"
        code = exc.code if isinstance(exc, StreamReset) else ErrorCodes.INTERNAL_ERROR
        cancelled = code == ErrorCodes.CANCEL
        if not cancelled:
            self._judge_attempt(False, "reset")
            self._judge_call(False, "reset")
        self._finish()
        if started:
            log.warning(
                "upstream gRPC stream cut short", reason=str(exc), request_id=exchange.request_id
            )
            self._client.reset_response(exchange, ErrorCodes(code))
            return
        grpc_code = status.status_for_reset(code) if isinstance(exc, StreamReset) else None
        if grpc_code is None:
            grpc_code = status.UNAVAILABLE
        self._log_failure(502, str(exc))
        exchange.body.detach()
        status.send_status(exchange, grpc_code, f"{self._service.name}: {exc}")

    def _fail(self, http_status: int, detail: str) -> None:
        if self._done:
            return
        self._finish()
        self._log_failure(http_status, detail)
        exchange = self.exchange
        exchange.body.detach()
        exchange.problem(http_status, detail)

    def _log_failure(self, http_status: int, detail: str) -> None:
        log.warning(
            "upstream request failed",
            status=http_status,
            detail=detail,
            service=self._service.name,
            attempts=len(self._tried),
            request_id=self.exchange.request_id,
        )

    def _may_retry(self, kind: str) -> bool:
        retry = self._retry
        if retry is None or self._done or len(self._tried) >= retry.attempts:
            return False
        if self._replay is None:
            return False  # a streaming body: nothing sent yet, but it cannot be kept
        if self._deadline - time.perf_counter() <= 0.001:
            return False
        if self._service.has_healthy_untried(self._tried):
            self._service.note_retry(kind)
            return True
        if not retry.budget.can_retry():
            self._service.note_budget_exhausted()
            return False
        if not self._retry_charged:
            retry.budget.active_retries += 1
            self._retry_charged = True
        self._service.note_retry(kind)
        return True

    async def _backoff(self) -> None:
        """The retry rules' delay before the next attempt, within the deadline."""
        retry = self._retry
        assert retry is not None
        delay = retry.backoff.delay(len(self._tried) - 1)
        remaining = self._deadline - time.perf_counter()
        await asyncio.sleep(max(0.0, min(delay, remaining * 0.9)))

    def _note_attempt_end(self, kind: str) -> None:
        target = self._target
        if target is not None:
            target.inflight -= 1
            self._target = None
        trace = self.exchange.trace
        if trace is not None:
            trace.attempt_error = kind
            trace.end_attempt()

    def _judge_attempt(self, ok: bool, kind: str = "", http_status: int = 0) -> None:
        if self._target is not None:
            self._service.judge_attempt(self._target, ok, kind, http_status if not ok else 0)

    def _judge_call(self, ok: bool, kind: str = "", http_status: int = 0) -> None:
        if self._admitted:
            self._admitted = False
            self._service.judge_call(self._tried, ok, kind, http_status)

    # Ending --------------------------------------------------------------------------

    def _deadline_passed(self) -> None:
        """grpc-timeout or the route's timeout: DEADLINE_EXCEEDED, the upstream cancelled."""
        exchange = self.exchange
        exchange.timer = None
        if not exchange.is_current():
            return
        self.cancel()
        seconds = self._deadline - exchange.started
        message = f"the call did not complete within its deadline ({seconds:.3g}s)"
        exchange.body.detach()
        if exchange.response_started:
            note = [(b"grpc-status", b"%d" % status.DEADLINE_EXCEEDED)]
            note.append((b"grpc-message", status.encode_message(message)))
            status.note_status(exchange, status.DEADLINE_EXCEEDED)
            self._client.end_with_trailers(exchange, note)
        else:
            self._log_failure(504, message)
            exchange.problem(504, message)

    def cancel(self) -> None:
        """The client went away or the deadline passed: reset the upstream stream."""
        if self._done:
            return
        self._finish()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
        stream = self._stream
        if stream is not None and not stream.ended:
            stream.reset(ErrorCodes.CANCEL)

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        exchange = self.exchange
        exchange.on_cancel = None
        service = self._service
        if self._admitted and service.breaker is not None:
            service.breaker.record_cancelled()
            self._admitted = False
        if exchange.trace is not None:
            exchange.trace.end_attempt()
        if self._sent_at:
            exchange.upstream_duration = time.perf_counter() - self._sent_at
        if self._target is not None:
            self._target.inflight -= 1
            self._target = None
        if self._retry_charged and self._retry is not None:
            self._retry.budget.active_retries -= 1
            self._retry_charged = False
        service.retry_budget.active_requests -= 1


def _lines(block: bytes) -> Headers:
    """`Name: value\\r\\n` lines rendered for HTTP/1.1 as HTTP/2 fields."""
    fields: Headers = []
    for line in block.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep:
            fields.append((name.strip().lower(), value.strip()))
    return fields


def _note_grpc_status(exchange: Exchange, fields: Headers) -> None:
    for name, value in fields:
        if name == b"grpc-status":
            with contextlib.suppress(ValueError):
                status.note_status(exchange, int(value))
            return
