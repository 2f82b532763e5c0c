"""The two limit algorithms as pure state machines (time is passed in), and the
in-process table of their states per key.

The Redis store runs the same rules in Lua (`redis_store.py`); the contract tests
run one suite against both.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Protocol


class Decision:
    """One limit's answer for one request, or the combined answer of all a policy's limits
    (`decide`: the refusing limit's, or when every limit admits, the one with the least
    remaining).

    When `admitted`, `remaining` and `reset` describe the state after this request
    is counted; otherwise `retry_after` says when a request would be admitted.
    `reset` is the seconds until `remaining` goes up by one (0 while the quota is full).
    `index` is the limit it speaks for (the one to report in the RateLimit header).
    A plain slotted class: built once per request, so it must be cheap (a frozen
    dataclass costs several times more to construct).
    """

    __slots__ = ("admitted", "index", "remaining", "reset", "retry_after")

    def __init__(
        self, admitted: bool, remaining: int, reset: float, retry_after: float, index: int = 0
    ) -> None:
        self.admitted = admitted
        self.remaining = remaining
        self.reset = reset
        self.retry_after = retry_after
        self.index = index

    def __repr__(self) -> str:
        return (
            f"Decision(admitted={self.admitted}, index={self.index}, remaining={self.remaining}, "
            f"reset={self.reset:.3f}, retry_after={self.retry_after:.3f})"
        )


class Algorithm(Protocol):
    limit: int
    window: float

    def new_state(self) -> Any: ...

    def check(self, state: Any, now: float) -> Decision: ...

    def take(self, state: Any, now: float) -> None: ...

    def idle(self, state: Any, now: float) -> bool: ...


class SlidingWindow:
    """At most `limit` admitted in any interval of `window` seconds.

    The state is the admission times still inside the window, oldest first
    (a deque of at most `limit` floats).
    """

    __slots__ = ("limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window

    def new_state(self) -> deque[float]:
        return deque()

    def check(self, state: deque[float], now: float) -> Decision:
        horizon = now - self.window
        while state and state[0] <= horizon:
            state.popleft()
        count = len(state)
        if count < self.limit:
            oldest = state[0] if state else now
            return Decision(True, self.limit - count - 1, oldest + self.window - now, 0.0)
        wait = state[0] + self.window - now
        return Decision(False, 0, wait, wait)

    def take(self, state: deque[float], now: float) -> None:
        state.append(now)

    def idle(self, state: deque[float], now: float) -> bool:
        return not state or state[-1] <= now - self.window


class TokenBucket:
    """A bucket of `burst` tokens, refilled continuously at limit/window per second;
    a request takes one. The state is [tokens, time of the last refill]."""

    __slots__ = ("burst", "limit", "rate", "window")

    def __init__(self, limit: int, window: float, burst: int | None = None) -> None:
        self.limit = limit
        self.window = window
        self.burst = burst if burst is not None else limit
        self.rate = limit / window

    def new_state(self) -> list[float]:
        return [float(self.burst), -math.inf]

    def check(self, state: list[float], now: float) -> Decision:
        tokens = min(self.burst, state[0] + (now - state[1]) * self.rate)
        state[0] = tokens
        state[1] = now
        if tokens >= 1.0:
            left = tokens - 1.0
            whole = int(left)  # left >= 0: int() is floor()
            return Decision(True, whole, (whole + 1 - left) / self.rate, 0.0)
        wait = (1.0 - tokens) / self.rate
        return Decision(False, 0, wait, wait)

    def take(self, state: list[float], now: float) -> None:
        state[0] -= 1.0

    def idle(self, state: list[float], now: float) -> bool:
        return state[0] + (now - state[1]) * self.rate >= self.burst


class MemoryTable:
    """The states of one limit, per key, in this process; bounded to `max_keys`.

    Over the bound, states that would start fresh anyway (idle) are dropped first;
    if that frees too little, the oldest-created tenth goes (those clients start
    over with a full quota: under a flood of distinct keys, memory wins).
    """

    __slots__ = ("algorithm", "max_keys", "states")

    def __init__(self, algorithm: Algorithm, max_keys: int = 100_000) -> None:
        self.algorithm = algorithm
        self.max_keys = max_keys
        self.states: dict[str, Any] = {}

    def state(self, key: str, now: float) -> Any:
        state = self.states.get(key)
        if state is None:
            if len(self.states) >= self.max_keys:
                self._shrink(now)
            state = self.states[key] = self.algorithm.new_state()
        return state

    def _shrink(self, now: float) -> None:
        idle = self.algorithm.idle
        for key in [k for k, s in self.states.items() if idle(s, now)]:
            del self.states[key]
        if len(self.states) >= self.max_keys:
            for key in list(self.states)[: max(1, self.max_keys // 10)]:
                del self.states[key]


def decide(checks: list[Decision]) -> Decision:
    """Combine per-limit checks: admitted only if every limit admits."""
    worst = 0
    for index, check in enumerate(checks):
        if not check.admitted:
            if checks[worst].admitted or check.retry_after > checks[worst].retry_after:
                worst = index
        elif checks[worst].admitted and check.remaining < checks[worst].remaining:
            worst = index
    chosen = checks[worst]
    chosen.index = worst
    return chosen


class MemoryLimiter:
    """All of a policy's limits over memory tables: check every one, count only if all admit."""

    __slots__ = ("tables",)

    def __init__(self, tables: list[MemoryTable]) -> None:
        self.tables = tables

    def acquire(self, keys: list[str], now: float) -> Decision:
        if len(self.tables) == 1:  # the common case, without the lists
            table = self.tables[0]
            algorithm = table.algorithm
            state = table.state(keys[0], now)
            check = algorithm.check(state, now)
            if check.admitted:
                algorithm.take(state, now)
            return check
        states = [table.state(key, now) for table, key in zip(self.tables, keys, strict=True)]
        checks = [
            table.algorithm.check(state, now)
            for table, state in zip(self.tables, states, strict=True)
        ]
        decision = decide(checks)
        if decision.admitted:
            for table, state in zip(self.tables, states, strict=True):
                table.algorithm.take(state, now)
        return decision
