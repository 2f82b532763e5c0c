"""The circuit breaker: a pure state machine with an injected clock (no I/O, no sleeping).

closed --(N failures in a row, or error rate over the window)--> open
open --(open_for elapsed)--> half-open: a bounded number of probes pass
half-open --(success_threshold successes)--> closed
half-open --(a failed probe)--> open again (for twice as long when `grow` is on)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from potok.config.resilience import CircuitBreakerConfig

CLOSED, OPEN, HALF_OPEN = 0, 1, 2  # the encoding operators alert on (circuit_breaker_state)
STATE_NAMES = {CLOSED: "closed", OPEN: "open", HALF_OPEN: "half_open"}

Transition = Callable[[int, int, str], None]  # (old state, new state, reason)


class RollingWindow:
    """Successes and failures over the last `window` seconds, in ten buckets."""

    __slots__ = ("_buckets", "_clock", "_fail", "_ok", "_start", "_width")

    BUCKETS = 10

    def __init__(self, window: float, clock: Callable[[], float]) -> None:
        self._width = window / self.BUCKETS
        self._clock = clock
        self._ok = [0] * self.BUCKETS
        self._fail = [0] * self.BUCKETS
        self._buckets = [-1] * self.BUCKETS  # the absolute bucket number each slot holds
        self._start = 0

    def _slot(self) -> int:
        number = int(self._clock() / self._width)
        slot = number % self.BUCKETS
        if self._buckets[slot] != number:
            self._buckets[slot] = number
            self._ok[slot] = 0
            self._fail[slot] = 0
        return slot

    def add(self, ok: bool) -> None:
        slot = self._slot()
        if ok:
            self._ok[slot] += 1
        else:
            self._fail[slot] += 1

    def totals(self) -> tuple[int, int]:
        """(requests, failures) in the window."""
        current = int(self._clock() / self._width)
        requests = failures = 0
        for slot in range(self.BUCKETS):
            if current - self._buckets[slot] < self.BUCKETS:
                requests += self._ok[slot] + self._fail[slot]
                failures += self._fail[slot]
        return requests, failures

    def clear(self) -> None:
        self._buckets = [-1] * self.BUCKETS


class CircuitBreaker:
    __slots__ = (
        "_clock",
        "_config",
        "_consecutive",
        "_on_transition",
        "_open_for",
        "_opened_at",
        "_opened_until",
        "_probe_successes",
        "_probes",
        "_window",
        "forced",
        "reason",
        "state",
    )

    def __init__(
        self,
        config: CircuitBreakerConfig,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Transition | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._on_transition = on_transition
        self._window = RollingWindow(config.window, clock)
        self.state = CLOSED
        self._consecutive = 0
        self._opened_until = 0.0
        self._open_for = config.open_for
        self._probes = 0
        self._probe_successes = 0
        self._opened_at = 0.0
        self.reason = ""  # why it last moved (for the admin API)
        # An operator's pin (admin API): None, or the state it is held in ("open", "closed").
        # Forced open is an open breaker that never times out (allow() needs no extra test);
        # forced closed is checked where the breaker would trip, not per request.
        self.forced: str | None = None

    def allow(self) -> bool:
        """May a request go out now? A True in half-open takes a probe slot."""
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN:
            if self._clock() < self._opened_until:
                return False
            self._move(HALF_OPEN, "open time elapsed")
        if self._probes < self._config.half_open_probes:
            self._probes += 1
            return True
        return False

    def reported_state(self) -> int:
        """The state as operators should see it: half-open once the open time is over.

        The move itself happens on the next request (`allow`); with no traffic the
        breaker would otherwise show open long after it stopped refusing anything.
        """
        if self.state == OPEN and self._clock() >= self._opened_until:
            return HALF_OPEN
        return self.state

    def retry_after(self) -> float:
        """Seconds until the breaker will let a probe through (0 when it would now); held
        open by an operator, the configured open time (a hint: nobody knows the end)."""
        if self.state != OPEN:
            return 0.0
        if self.forced == "open":
            return self._config.open_for
        return max(0.0, self._opened_until - self._clock())

    def opened_for(self) -> float:
        """Seconds since it last opened (0 when not open)."""
        return self._clock() - self._opened_at if self.state == OPEN else 0.0

    def force(self, mode: str, reason: str) -> None:
        """An operator's override: "open" (refuse everything until released), "closed"
        (never trip) or "auto" (release: a breaker held open goes half-open, so probes
        decide; one held closed stays closed)."""
        if mode == "open":
            self.forced = "open"
            self._opened_at = self._clock()
            self._opened_until = math.inf
            self._move(OPEN, reason)
        elif mode == "closed":
            self.forced = "closed"
            self._open_for = self._config.open_for
            self._move(CLOSED, reason)
        else:
            was_open = self.forced == "open"
            self.forced = None
            if was_open:
                self._opened_until = self._clock()
                self._move(HALF_OPEN, reason)

    def record_success(self) -> None:
        if self.state == HALF_OPEN:
            self._probes = max(0, self._probes - 1)
            self._probe_successes += 1
            if self._probe_successes >= self._config.success_threshold:
                self._open_for = self._config.open_for
                self._move(CLOSED, f"{self._probe_successes} probes succeeded")
            return
        self._consecutive = 0
        self._window.add(True)

    def record_failure(self) -> None:
        if self.state == HALF_OPEN:
            self._probes = max(0, self._probes - 1)
            if self._config.grow:
                self._open_for = min(self._open_for * 2, self._config.open_for_max)
            self._open("a probe failed")
            return
        if self.state == OPEN:
            return  # a request let through before the trip, answering late
        self._consecutive += 1
        self._window.add(False)
        config = self._config
        if self._consecutive >= config.consecutive_failures:
            self._open(f"{self._consecutive} consecutive failures")
            return
        requests, failures = self._window.totals()
        if requests >= config.min_requests and failures / requests > config.error_rate:
            self._open(f"error rate {failures}/{requests} over {config.window:g}s")

    def record_cancelled(self) -> None:
        """A request that was let through ended without a verdict (client left)."""
        if self.state == HALF_OPEN:
            self._probes = max(0, self._probes - 1)

    def _open(self, reason: str) -> None:
        if self.forced == "closed":  # held closed by an operator: count, never trip
            self._consecutive = 0
            return
        self._opened_at = self._clock()
        self._opened_until = self._opened_at + self._open_for
        self._move(OPEN, reason)

    def _move(self, state: int, reason: str) -> None:
        old = self.state
        self.state = state
        self.reason = reason
        self._consecutive = 0
        self._probes = 0
        self._probe_successes = 0
        if state == CLOSED:
            self._window.clear()
        if self._on_transition is not None and old != state:
            self._on_transition(old, state, reason)
