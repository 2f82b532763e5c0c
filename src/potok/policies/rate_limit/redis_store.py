"""Rate-limit counters in Redis: exact across instances, one round trip per loop tick.

Every check is decided inside one Lua script, so no two instances can both read
"99 used" and both admit the 100th request. Checks issued during the same event
loop tick are sent together as one EVALSHA (automatic pipelining): at thousands of
requests per second the cost per request is a share of one round trip, not one
round trip each. The script reads the clock from Redis (`TIME`), so instances with
skewed clocks still agree on every window.

The store talks to Redis over one connection of its own (`ScriptClient`, a minimal
RESP client on hiredis): one batch is one `EVALSHA` written straight to the socket.

A check is submitted with a `settle` callback rather than awaited, so a request
costs no task, coroutine or future: the batch's reply is handled in the loop
iteration that reads it, and each check's `settle` resumes its request's pipeline
right there (see policy.py and pipeline.py).

A batch that fails or exceeds `redis.timeout` fails all of its checks with
`StoreUnavailable`; for `redis.retry_interval` after that, checks fail at once
without touching Redis (`marked_down`), and then the next batch tries again
(recovery needs no restart).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog

from potok.policies.rate_limit.algorithms import Decision
from potok.policies.rate_limit.redis_connection import ScriptClient

if TYPE_CHECKING:
    from potok.config.redis import RedisConfig
    from potok.observability.metrics import Counter, Histogram

log = structlog.get_logger("potok.rate_limit")

SLIDING_WINDOW = 1
TOKEN_BUCKET = 2

# Checks per script call: bounds how long one call keeps Redis busy (a few hundred µs).
MAX_BATCH = 256

# Batches in flight at once (in order, on the one connection). While they are out,
# checks gather for the next: under load a batch grows to (request rate x round trip /
# MAX_IN_FLIGHT), so a round trip's cost (a write, a wake-up of Redis, a reply to parse)
# is shared by many requests; when idle, a check still goes out on the next loop tick.
# Measured (bench/ratelimit.sh, wrk -c50): with 1 the worker sat idle ~17 % of the time
# waiting for replies (25 checks per call); with 4 it served ~7 % more requests with a
# lower p99 at 2,000 req/s, at 16 checks per call.
MAX_IN_FLIGHT = 4

# An outage is logged at most once per this many seconds (per worker).
LOG_INTERVAL = 10.0

# ARGV: now_us ("0": Redis TIME), batch token, number of checks, number of limit
# groups (a policy's limits), then per group its number of limits and per limit:
# algorithm, limit, window_us, burst; then, only with several groups, each check's
# group (1-based). KEYS: one per limit per check, in order. Each argument costs the
# client an encoding step, so a batch of one policy's checks sends little but its keys.
# Reply per check: {admitted, index (0-based), remaining, reset_ms, retry_ms}, where
# index is the refusing limit or the one with the least remaining (as algorithms.decide).
SCRIPT = """
local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local token = ARGV[2]
local n = tonumber(ARGV[3])
local groups = tonumber(ARGV[4])
local a, k = 5, 1
local specs = {}
for g = 1, groups do
  local m = tonumber(ARGV[a]); a = a + 1
  local group = {}
  for i = 1, m do
    group[i] = {tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]),
                tonumber(ARGV[a + 3])}
    a = a + 4
  end
  specs[g] = group
end
local out = {}
for c = 1, n do
  local group = specs[1]
  if groups > 1 then group = specs[tonumber(ARGV[a])]; a = a + 1 end
  local m = #group
  local ok, rem, reset, retry, tokens = {}, {}, {}, {}, {}
  local algo, lim, win, burst, keys = {}, {}, {}, {}, {}
  local all = true
  for i = 1, m do
    algo[i] = group[i][1]; lim[i] = group[i][2]; win[i] = group[i][3]; burst[i] = group[i][4]
    local key = KEYS[k]; k = k + 1
    keys[i] = key
    if algo[i] == 1 then
      redis.call('ZREMRANGEBYSCORE', key, '-inf', now - win[i])
      local count = redis.call('ZCARD', key)
      local oldest = now
      if count > 0 then
        oldest = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2])
      end
      reset[i] = oldest + win[i] - now
      if count < lim[i] then
        ok[i] = true; rem[i] = lim[i] - count - 1; retry[i] = 0
      else
        ok[i] = false; rem[i] = 0; retry[i] = reset[i]
      end
    else
      local rate = lim[i] / win[i]
      local state = redis.call('HMGET', key, 't', 'ts')
      local have = burst[i]
      if state[1] then
        have = math.min(burst[i], tonumber(state[1]) + math.max(0, now - tonumber(state[2])) * rate)
      end
      tokens[i] = have
      if have >= 1 then
        local left = have - 1
        ok[i] = true; rem[i] = math.floor(left); retry[i] = 0
        reset[i] = (math.floor(left) + 1 - left) / rate
      else
        ok[i] = false; rem[i] = 0; retry[i] = (1 - have) / rate; reset[i] = retry[i]
      end
    end
    if not ok[i] then all = false end
  end
  local worst = 1
  for i = 2, m do
    if not ok[i] then
      if ok[worst] or retry[i] > retry[worst] then worst = i end
    elseif ok[worst] and rem[i] < rem[worst] then
      worst = i
    end
  end
  if all then
    for i = 1, m do
      if algo[i] == 1 then
        redis.call('ZADD', keys[i], now, token .. ':' .. c)
        redis.call('PEXPIRE', keys[i], math.ceil(win[i] / 1000) + 1)
      else
        redis.call('HSET', keys[i], 't', tokens[i] - 1, 'ts', now)
        redis.call('PEXPIRE', keys[i], math.ceil(burst[i] / (lim[i] / win[i]) / 1000) + 1)
      end
    end
  end
  out[c] = {all and 1 or 0, worst - 1, rem[worst], math.ceil(reset[worst] / 1000),
            math.ceil(retry[worst] / 1000)}
end
return out
"""


class StoreUnavailable(Exception):
    """The store could not answer in time; the policy's on_store_error decides."""


Reply = list[int]
"""The script's answer for one check: [admitted (1/0), index, remaining, reset_ms, retry_ms]."""

Settle = Callable[[Any, Reply | StoreUnavailable], None]
"""Receives a check's subject (what `submit` was given) and its outcome: the script's
reply, or why the store could not decide."""


def decision(reply: Reply) -> Decision:
    admitted, index, remaining, reset_ms, retry_ms = reply
    return Decision(admitted == 1, remaining, reset_ms / 1000, retry_ms / 1000, index)


class LimitSpec:
    """One limit as the script takes it (precomputed once per policy)."""

    __slots__ = ("args", "label")

    def __init__(self, label: str, algorithm: int, limit: int, window: float, burst: int) -> None:
        self.label = label
        self.args = (algorithm, limit, round(window * 1_000_000), burst)


# One submitted check: its limits, its keys, where its outcome goes and with what
# (a tuple: this is per request, and a class instance costs a Python __init__ call).
_Pending = tuple[Sequence[LimitSpec], list[str], Settle, Any]


class _Batch:
    """One script call on its way: its checks, when it left, its timeout."""

    __slots__ = ("checks", "done", "started", "timer")

    def __init__(self, checks: list[_Pending], started: float) -> None:
        self.checks = checks
        self.started = started
        self.done = False  # answered, failed or timed out: whatever comes later is dropped
        self.timer: asyncio.TimerHandle | None = None


class RedisLimitStore:
    """Batches the checks of one event-loop tick into one script call."""

    def __init__(
        self,
        client: ScriptClient,
        config: RedisConfig,
        *,
        latency: Histogram | None = None,
        errors: Counter | None = None,
        clock_us: Callable[[], int] | None = None,
    ) -> None:
        self._client = client
        # The worker's loop, looked up on first use: asyncio.get_running_loop() makes a
        # getpid() system call each time, and this is on every request's path.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeout = config.timeout
        self._retry_interval = config.retry_interval
        self._latency = latency
        self._errors = errors
        self._clock_us = clock_us  # tests only: a fake clock instead of Redis TIME
        self._pending: list[_Pending] = []
        self._flush_scheduled = False
        self._in_flight = 0
        self.down_until = 0.0  # set after a failure (see marked_down); 0: healthy
        self._last_log = -math.inf
        self._token = os.urandom(6).hex()
        self.batches = 0

    def marked_down(self) -> bool:
        """Whether a recent failure makes checks fail at once (for `retry_interval`)."""
        return bool(self.down_until) and time.monotonic() < self.down_until

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the store runs on (one store per worker, one loop per worker)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def submit(
        self, specs: Sequence[LimitSpec], keys: list[str], settle: Settle, subject: Any
    ) -> None:
        """Check (and when every limit admits, count) one request against `specs`; its
        outcome goes to `settle(subject, outcome)`, always later, from the loop (never
        inside this call). `settle` must not raise."""
        self._pending.append((specs, keys, settle, subject))
        if not self._flush_scheduled and self._in_flight < MAX_IN_FLIGHT:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    async def acquire(self, specs: Sequence[LimitSpec], keys: list[str]) -> Decision:
        """`submit` as a coroutine: the decision, or raises `StoreUnavailable`."""
        if self.marked_down():
            raise StoreUnavailable("rate limit store marked down after a recent failure")
        future: asyncio.Future[Decision] = self.loop.create_future()
        self.submit(specs, keys, _settle_future, future)
        return await future

    def _flush(self) -> None:
        self._flush_scheduled = False
        checks, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        if not checks:
            return
        self._in_flight += 1
        keys, argv = self._arguments(checks)
        batch = _Batch(checks, time.perf_counter())
        batch.timer = self.loop.call_later(self._timeout, self._timed_out, batch)
        self._client.send(keys, argv, partial(self._replied, batch))

    def _replied(self, batch: _Batch, reply: Any) -> None:
        if batch.done:  # timed out already: counted as a failure then
            return
        self._finish(batch)
        checks = batch.checks
        if type(reply) is not list or len(reply) != len(checks):
            # RedisReplyError, ConnectionError, OSError; or not the script's answer at all
            error = reply if isinstance(reply, Exception) else RuntimeError(f"{reply!r:.80}")
            self._failed(error, checks)
        else:
            if self._latency is not None:
                self._latency.observe(("rate_limit",), time.perf_counter() - batch.started)
            self.down_until = 0.0
            for (_, _, settle, subject), outcome in zip(checks, reply, strict=True):
                try:  # free in CPython 3.11 until something raises
                    settle(subject, outcome)
                except Exception as exc:  # a bug must not strand the batch's other requests
                    self._report(exc)
        self._next()

    def _timed_out(self, batch: _Batch) -> None:
        if batch.done:
            return
        self._finish(batch)
        self._client.reset()  # a reply may still be owed on it: start afresh
        self._failed(TimeoutError(f"no reply within {self._timeout} s"), batch.checks)
        self._next()

    def _finish(self, batch: _Batch) -> None:
        batch.done = True
        if batch.timer is not None:
            batch.timer.cancel()
        self._in_flight -= 1

    def _next(self) -> None:
        """A batch is done: send what gathered meanwhile."""
        if not self._pending or self._flush_scheduled:
            return
        if self.marked_down():
            # The store just failed: what waited behind that batch fails now, not later.
            pending, self._pending = self._pending, []
            self._settle_all(pending, StoreUnavailable("rate limit store unavailable"))
            return
        self._flush_scheduled = True
        self.loop.call_soon(self._flush)

    def _arguments(self, batch: list[_Pending]) -> tuple[list[str], list[Any]]:
        """The script's KEYS and ARGV for a batch (layout above SCRIPT)."""
        now = str(self._clock_us()) if self._clock_us is not None else "0"
        self.batches += 1
        specs = batch[0][0]
        keys: list[str] = []
        if all(item[0] is specs for item in batch):  # one policy's checks: the usual batch
            for item in batch:
                keys += item[1]
            argv: list[Any] = [now, f"{self._token}:{self.batches}", len(batch), 1, len(specs)]
            for spec in specs:
                argv += spec.args
            return keys, argv
        groups: dict[int, int] = {}
        group_args: list[Any] = []
        for item_specs, item_keys, _, _ in batch:
            if id(item_specs) not in groups:
                groups[id(item_specs)] = len(groups) + 1
                group_args.append(len(item_specs))
                for spec in item_specs:
                    group_args.extend(spec.args)
            keys += item_keys
        argv = [now, f"{self._token}:{self.batches}", len(batch), len(groups), *group_args]
        argv.extend(groups[id(item[0])] for item in batch)
        return keys, argv

    def _failed(self, exc: BaseException, checks: list[_Pending]) -> None:
        now = time.monotonic()
        self.down_until = now + self._retry_interval
        if self._errors is not None:
            self._errors.inc(("redis",))
        if now - self._last_log >= LOG_INTERVAL:
            self._last_log = now
            log.warning(
                "rate limit store unavailable",
                store="redis",
                error=str(exc) or type(exc).__name__,
                failing_fast_for_s=self._retry_interval,
            )
        self._settle_all(checks, StoreUnavailable(str(exc) or type(exc).__name__))

    def _settle_all(self, checks: list[_Pending], error: StoreUnavailable) -> None:
        for _, _, settle, subject in checks:
            try:
                settle(subject, error)
            except Exception as exc:
                self._report(exc)

    def _report(self, exc: Exception) -> None:
        self.loop.call_exception_handler({"message": "rate limit settle failed", "exception": exc})


def _settle_future(future: asyncio.Future[Decision], outcome: Reply | StoreUnavailable) -> None:
    if future.done():  # the caller was cancelled
        return
    if isinstance(outcome, StoreUnavailable):
        future.set_exception(outcome)
    else:
        future.set_result(decision(outcome))
