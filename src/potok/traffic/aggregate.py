"""Aggregated routes (back end for front end): one answer composed of several upstream
calls made in parallel.

Built at config load: each call's path template is split into literal bytes and path
parameter names, its service, retry rules, timeout and metric cells looked up once. Per
request: the headers every call shares (the client's, less what a policy consumed or
what would make the answer unreadable here; the caller's identity; X-Forwarded-*;
X-Request-ID) are rendered once; each call runs as a task through `BufferedCall` (the
service's own balancer, pools, breaker, retries, health), with its own trace span.

When a required call fails the client gets the problem+json the proxy would have given
(502; 503 with Retry-After for an open breaker or a full bulkhead; 504 for a timeout) at
once, and the other calls are cancelled. When every required call succeeded the answer
is 200: the JSON of each call under its key, or merged into the top level, in the order
the calls are listed (a later call wins on a name two give), whatever order they answer
in; the optional calls that failed are named in `X-Potok-Partial`.

Sequential calls (one needing a field of another's answer) are not built.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from potok.http.http11 import header_block
from potok.routing.pattern import split_pattern
from potok.upstream.buffered_call import BufferedCall, CallFailed

if TYPE_CHECKING:
    from potok.exchange import Exchange, RoutePipeline
    from potok.observability.metrics import MetricsRegistry
    from potok.traffic.config import AggregateCall
    from potok.upstream.retry import RetryPolicy
    from potok.upstream.service import Service
    from potok.upstream.target import Target

log = structlog.get_logger("potok.aggregate")

# What became of a call: ok; status (a non-2xx answer); invalid (not JSON, or not an
# object where it merges); too_large; timeout; breaker_open; failed (connect, reset, a
# full bulkhead).
RESULTS = ("ok", "status", "invalid", "too_large", "timeout", "breaker_open", "failed")
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Client headers no call gets: framing (a call has no body), content codings and ranges
# (the gateway must read the answer as JSON, and asks for it: `Accept: application/json`),
# conditionals (a 304 has nothing to merge).
_NOT_SENT = frozenset(
    {
        b"accept",
        b"content-length",
        b"transfer-encoding",
        b"expect",
        b"accept-encoding",
        b"range",
        b"if-range",
        b"if-match",
        b"if-none-match",
        b"if-modified-since",
        b"if-unmodified-since",
    }
)
_ALLOWED = frozenset({b"GET", b"HEAD"})


class Call:
    """One call of an aggregated route, compiled."""

    __slots__ = (
        "_counts",
        "_duration",
        "_pieces",
        "_static",
        "key",
        "label",
        "max_body",
        "required",
        "retry",
        "service",
        "timeout",
    )

    def __init__(
        self,
        config: AggregateCall,
        service: Service,
        retry: RetryPolicy | None,
        route: str,
        registry: MetricsRegistry | None,
    ) -> None:
        self.service = service
        self.retry = retry
        self.label = config.label
        self.key = config.key
        self.required = config.required
        self.timeout = config.timeout
        self.max_body = config.max_body
        # Literal bytes, or (str) the name of the path parameter in their place.
        self._pieces: tuple[bytes | str, ...] = tuple(
            piece
            for segment in split_pattern(config.path)
            for piece in (b"/", segment.literal if segment.literal is not None else segment.param)
            if piece is not None
        ) or (b"/",)
        if config.path.endswith("/") and config.path != "/":
            self._pieces += (b"/",)
        api_key = service.api_key_header
        self._static = (
            header_block([api_key]) if api_key is not None else b""
        ) + b"Accept: application/json\r\n"
        if registry is not None:
            counter = registry.counter(
                "aggregate_calls_total",
                "Calls of aggregated routes, by what became of them.",
                ("route", "call", "result"),
            )
            self._counts = {result: counter.cell((route, self.label, result)) for result in RESULTS}
            self._duration = registry.histogram(
                "aggregate_call_duration_seconds",
                "Time of one call of an aggregated route, its retries included.",
                ("route", "call"),
                _BUCKETS,
            ).row((route, self.label))
        else:
            self._counts = {result: [0.0] for result in RESULTS}
            self._duration = [0] * (len(_BUCKETS) + 1) + [0.0]

    def path(self, params: dict[str, str] | None) -> bytes:
        pieces = self._pieces
        if params is None:
            return b"".join(pieces)  # type: ignore[arg-type]  # no parameters: all bytes
        return b"".join(
            piece if isinstance(piece, bytes) else params[piece].encode("latin-1")
            for piece in pieces
        )

    def count(self, result: str, seconds: float) -> None:
        self._counts[result][0] += 1
        row = self._duration
        row[bisect_left(_BUCKETS, seconds)] += 1
        row[-1] += seconds

    async def run(self, exchange: Exchange, common: bytes, request: _Request, index: int) -> None:
        """Make the call and tell `request` how it went (never raises but cancelled)."""
        # GET for a HEAD too: the answer is composed the same, only not sent.
        start = b"GET %s%s HTTP/1.1\r\nHost: " % (self.path(exchange.params), exchange.query)
        static = self._static

        def head(target: Target, trace_lines: bytes) -> bytes:
            return b"".join(
                (start, target.host_header, b"\r\n", common, trace_lines, static, b"\r\n")
            )

        call = BufferedCall(
            self.service,
            "GET",
            head,
            within=self.timeout,
            max_body=self.max_body,
            retry=self.retry,
            trace=exchange.trace,
            trace_lines=exchange.trace_lines,
        )
        started = time.perf_counter()
        outcome: _Outcome
        try:
            answer = await call.run()
        except CallFailed as failed:
            result = failed.kind if failed.kind in RESULTS else "failed"
            outcome = _Outcome(result, None, failed.status, failed.detail, failed.retry_after)
        except Exception as exc:  # a bug: the request's 500, not a silent wait for its deadline
            request.crashed(exc)
            return
        else:
            outcome = self._judge(answer.status, answer.body)
        self.count(outcome.result, time.perf_counter() - started)
        request.done(index, outcome)

    def _judge(self, status: int, body: bytes) -> _Outcome:
        if not 200 <= status < 300:
            return _Outcome(
                "status",
                None,
                502,
                f"{self.service.name} answered {status} to the {self.label} call",
            )
        if not body:
            return _Outcome("ok", None)
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _Outcome("invalid", None, 502, f"the {self.label} call's answer is not JSON")
        if self.key is None and not isinstance(value, dict):
            return _Outcome(
                "invalid", None, 502, f"the {self.label} call's answer is not a JSON object"
            )
        return _Outcome("ok", value)


class _Outcome:
    __slots__ = ("detail", "result", "retry_after", "status", "value")

    def __init__(
        self,
        result: str,
        value: Any,
        status: int = 200,
        detail: str = "",
        retry_after: float = 0.0,
    ) -> None:
        self.result = result
        self.value = value
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


class _Request:
    """One client request's calls under way; answers when the last is in, or when a
    required one failed."""

    __slots__ = ("_exchange", "_outcomes", "_remaining", "_stage", "tasks")

    def __init__(self, stage: AggregateStage, exchange: Exchange, count: int) -> None:
        self._stage = stage
        self._exchange = exchange
        self._outcomes: list[_Outcome | None] = [None] * count
        self._remaining = count
        self.tasks: list[asyncio.Task[None]] = []

    def cancel(self) -> None:
        """The client left or the route's deadline answered: stop every call."""
        for task in self.tasks:
            task.cancel()

    def done(self, index: int, outcome: _Outcome) -> None:
        if self._remaining <= 0:
            return  # already answered (a required call failed before)
        self._outcomes[index] = outcome
        self._remaining -= 1
        exchange = self._exchange
        call = self._stage.calls[index]
        if outcome.result != "ok" and call.required:
            self._remaining = 0
            for task in self.tasks:
                if task is not asyncio.current_task():
                    task.cancel()
            self._fail(call, outcome)
            return
        if self._remaining == 0:
            exchange.on_cancel = None
            if exchange.is_current():
                self._stage.answer(exchange, self._outcomes)

    def crashed(self, exc: Exception) -> None:
        if self._remaining <= 0:
            return
        self._remaining = 0
        self._exchange.on_cancel = None
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        if self._exchange.is_current():
            self._exchange.handler_failed(exc)

    def _fail(self, call: Call, outcome: _Outcome) -> None:
        exchange = self._exchange
        exchange.on_cancel = None
        log.warning(
            "aggregated call failed",
            route=exchange.route_name,
            call=call.label,
            result=outcome.result,
            detail=outcome.detail,
            request_id=exchange.request_id,
        )
        if not exchange.is_current():
            return
        headers: tuple[tuple[bytes, bytes], ...] = ()
        if outcome.status == 503:
            headers = ((b"Retry-After", b"%d" % max(1, round(outcome.retry_after))),)
        exchange.target_name = "failed:" + call.label
        exchange.problem(
            outcome.status, outcome.detail, headers=headers, extra={"call": call.label}
        )


class AggregateStage:
    """The terminal stage of an aggregated route."""

    __slots__ = ("_drop", "_loop", "_partial", "_services", "calls")

    def __init__(
        self,
        calls: list[Call],
        drop: frozenset[bytes],
        route: str,
        registry: MetricsRegistry | None,
    ) -> None:
        self.calls = tuple(calls)
        self._drop = drop | _NOT_SENT
        self._services = ",".join(dict.fromkeys(call.service.name for call in calls))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._partial = (
            registry.counter(
                "aggregate_partial_total",
                "Answers of aggregated routes sent with optional parts missing.",
                ("route",),
            ).cell((route,))
            if registry is not None
            else [0.0]
        )

    def bind(self, pipeline: RoutePipeline) -> None:
        """Nothing of the pipeline is needed: the answer is the gateway's own (respond
        runs the route's response hooks)."""

    def __call__(self, exchange: Exchange) -> None:
        if exchange.method not in _ALLOWED:
            exchange.problem(
                405,
                "an aggregated route answers GET and HEAD only",
                headers=((b"Allow", b"GET, HEAD"),),
            )
            return
        exchange.service_name = self._services
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        common = self._common(exchange)
        request = _Request(self, exchange, len(self.calls))
        exchange.on_cancel = request.cancel
        request.tasks = [
            loop.create_task(call.run(exchange, common, request, index))
            for index, call in enumerate(self.calls)
        ]

    def _common(self, exchange: Exchange) -> bytes:
        """The header lines every call sends, as `RequestHeadBuilder` renders them for a
        proxied request (client headers first, then only what the gateway sets)."""
        drop = self._drop
        headers = [
            pair for pair in exchange.headers if pair[0].lower().replace(b"_", b"-") not in drop
        ]
        identity = exchange.identity
        return b"".join(
            (
                header_block(headers),
                identity.upstream_lines if identity is not None else b"",
                b"X-Forwarded-For: ",
                exchange.forwarded_for or b"",
                b"\r\nX-Forwarded-Proto: ",
                exchange.forwarded_proto or b"http",
                b"\r\nX-Forwarded-Host: ",
                exchange.forwarded_host or b"",
                b"\r\nX-Request-ID: ",
                exchange.request_id.encode(),
                b"\r\n",
            )
        )

    def answer(self, exchange: Exchange, outcomes: list[_Outcome | None]) -> None:
        """200: every required call answered; the optional ones that did not are named."""
        document: dict[str, Any] = {}
        missing: list[str] = []
        for call, outcome in zip(self.calls, outcomes, strict=True):
            if outcome is None or outcome.result != "ok":
                missing.append(call.label)
                continue
            if call.key is not None:
                document[call.key] = outcome.value
            elif outcome.value is not None:
                document.update(outcome.value)
        headers: tuple[tuple[bytes, bytes], ...] = ()
        if missing:
            self._partial[0] += 1
            names = ",".join(missing)
            exchange.target_name = "partial:" + names
            headers = ((b"X-Potok-Partial", names.encode()),)
        exchange.respond(200, orjson.dumps(document), b"application/json", headers)
