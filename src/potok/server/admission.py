"""Admission: under overload a worker sheds requests at once (503 + Retry-After) instead of
queueing them behind work it cannot finish, so latency stays bounded and the refusal is
visible (`http_requests_shed_total`, one warning line per interval).

Two bounds, both per worker: requests being answered (`max_in_flight`) and how late the
event loop runs its timers (`max_loop_lag`, sampled every `LAG_INTERVAL`: a saturated
loop is late for everything, and adding work makes it later). The lag that counts is the
lesser of the last two samples: one long pause (a big reload, a full collection) is not
overload, and shedding the requests that queued behind it would only punish them.
Health probes and the metrics scrape are never shed: an orchestrator must see a busy
gateway as alive, and operators must see the shedding.

`Admission` wraps the request handler: connections call it like the gateway itself.
A shed request never reaches the gateway, so its metrics and access log see only the
requests it answered.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

import structlog

from potok.observability.metrics import MetricsRegistry

if TYPE_CHECKING:
    from potok.config.models import ServerOverload
    from potok.exchange import Exchange, ResponseHook
    from potok.server.state import RequestHandler

log = structlog.get_logger("potok.admission")

LAG_INTERVAL = 0.05
LOG_INTERVAL = 10.0

# Exact paths (one set lookup; a path that only starts like these is shed like any other).
EXEMPT = frozenset(
    {
        b"/api/v1/health",
        b"/api/v1/health/liveness",
        b"/api/v1/health/readiness",
        b"/api/v1/metrics",
    }
)


class Admission:
    """The request handler connections call: admits, or answers 503 itself."""

    __slots__ = (
        "_lag_timer",
        "_last_late",
        "_last_log",
        "_retry_after",
        "_shed_since_log",
        "_shedding",
        "handler",
        "in_flight",
        "lag",
        "max_in_flight",
        "max_loop_lag",
        "shed_total",
    )

    def __init__(
        self, handler: RequestHandler, config: ServerOverload, registry: MetricsRegistry
    ) -> None:
        self.handler = handler
        self.in_flight = 0
        self.lag = 0.0
        self.max_in_flight: float = 0  # math.inf when unbounded
        self.max_loop_lag = 0.0
        self._retry_after = (b"Retry-After", b"1")
        self.configure(config)
        self.shed_total = registry.counter(
            "http_requests_shed_total",
            "Requests refused with 503 because the worker was overloaded, by bound.",
            ("reason",),
        )
        registry.gauge(
            "event_loop_lag_seconds",
            "How late the worker's event loop ran its timers (the lesser of the last two samples).",
            per_worker=True,  # a lag is a state of one loop: summing workers' lags means nothing
        ).function = lambda: self.lag
        self._shedding: Exchange | None = None
        self._shed_since_log = 0
        self._last_log = -math.inf
        self._lag_timer: asyncio.TimerHandle | None = None
        self._last_late = 0.0

    def configure(self, config: ServerOverload) -> None:
        """Apply (new) bounds; a config reload calls this."""
        self.max_in_flight = config.max_in_flight or math.inf
        self.max_loop_lag = config.max_loop_lag or math.inf
        seconds = max(1, math.ceil(config.retry_after))
        self._retry_after = (b"Retry-After", b"%d" % seconds)

    # RequestHandler ----------------------------------------------------------------

    @property
    def answer_hooks(self) -> tuple[ResponseHook, ...]:
        """The gateway's: a shed 503 carries the global response headers too."""
        return self.handler.answer_hooks

    def handle(self, exchange: Exchange) -> None:
        if (
            self.in_flight >= self.max_in_flight or self.lag > self.max_loop_lag
        ) and exchange.path not in EXEMPT:
            self._shed(exchange)
            return
        self.in_flight += 1
        self.handler.handle(exchange)

    def finished(self, exchange: Exchange) -> None:
        if exchange is self._shedding:
            return
        self.in_flight -= 1
        self.handler.finished(exchange)

    # Shedding ----------------------------------------------------------------------

    def _shed(self, exchange: Exchange) -> None:
        reason = "in_flight" if self.in_flight >= self.max_in_flight else "loop_lag"
        self.shed_total.inc((reason,))
        self._note_shed(reason)
        # The answer is written synchronously; its `finished` must not reach the gateway,
        # which never saw the request.
        self._shedding = exchange
        try:
            exchange.problem(
                503,
                "the gateway is overloaded; retry later",
                title="Service overloaded",
                headers=(self._retry_after,),
            )
        finally:
            self._shedding = None

    def _note_shed(self, reason: str) -> None:
        self._shed_since_log += 1
        now = asyncio.get_running_loop().time()
        if now - self._last_log >= LOG_INTERVAL:
            log.warning(
                "shedding load",
                shed=self._shed_since_log,
                reason=reason,
                in_flight=self.in_flight,
                loop_lag_s=round(self.lag, 3),
            )
            self._last_log = now
            self._shed_since_log = 0

    # Event-loop lag ----------------------------------------------------------------

    def start(self) -> None:
        """Sample the loop's lag every LAG_INTERVAL (call with the loop running)."""
        loop = asyncio.get_running_loop()

        def sample(expected: float) -> None:
            now = loop.time()
            self.note_lag(now - expected)
            self._lag_timer = loop.call_at(now + LAG_INTERVAL, sample, now + LAG_INTERVAL)

        first = loop.time() + LAG_INTERVAL
        self._lag_timer = loop.call_at(first, sample, first)

    def note_lag(self, late: float) -> None:
        """One sample: the timer ran `late` seconds after its time."""
        late = max(0.0, late)
        self.lag = min(late, self._last_late)
        self._last_late = late

    def stop(self) -> None:
        if self._lag_timer is not None:
            self._lag_timer.cancel()
            self._lag_timer = None
