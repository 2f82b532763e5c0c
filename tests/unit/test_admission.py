"""Admission bounds and the supervisor's restart delays (pure parts; the gateway-level
behaviour is in tests/integration/test_process.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from potok.config.models import ServerOverload
from potok.observability.metrics import MetricsRegistry
from potok.process.supervisor import restart_delay
from potok.server.admission import Admission


class Recorder:
    """The gateway's side: what it was asked to handle and heard finish."""

    def __init__(self) -> None:
        self.handled: list[Any] = []
        self.done: list[Any] = []

    def handle(self, exchange: Any) -> None:
        self.handled.append(exchange)

    def finished(self, exchange: Any) -> None:
        self.done.append(exchange)


class FakeExchange:
    def __init__(self, admission: Admission, path: bytes) -> None:
        self.admission = admission
        self.path = path
        self.answer: tuple[int, dict[bytes, bytes]] | None = None

    def problem(self, status: int, detail: str, *, title: str, headers: Any) -> None:
        self.answer = (status, dict(headers))
        self.admission.finished(self)  # what end_response does, synchronously


def admission(**bounds: Any) -> tuple[Admission, Recorder, MetricsRegistry]:
    inner = Recorder()
    registry = MetricsRegistry("0")
    return Admission(inner, ServerOverload(**bounds), registry), inner, registry


def shed_count(registry: MetricsRegistry, reason: str) -> float:
    series = registry.snapshot()["counters"]["http_requests_shed_total"]
    return sum(value for labels, value in series if labels == [reason])


def busy(seconds: float) -> None:
    """Hold the event loop with CPU work."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_in_flight_bound_sheds_and_finishing_frees_a_place():
    async def scenario() -> None:
        gate, inner, registry = admission(max_in_flight=2, retry_after=2.5)
        first, second, third = (FakeExchange(gate, b"/x") for _ in range(3))
        for exchange in (first, second, third):
            gate.handle(exchange)
        assert inner.handled == [first, second]
        assert third.answer == (503, {b"Retry-After": b"3"})
        assert inner.done == []  # the gateway never hears of a shed request
        assert shed_count(registry, "in_flight") == 1
        gate.finished(first)
        fourth = FakeExchange(gate, b"/x")
        gate.handle(fourth)
        assert inner.handled[-1] is fourth and gate.in_flight == 2

    run(scenario())


def test_probes_and_metrics_are_never_shed_but_lookalike_paths_are():
    async def scenario() -> None:
        gate, inner, _ = admission(max_in_flight=1)
        gate.handle(FakeExchange(gate, b"/busy"))
        for path in (b"/api/v1/health", b"/api/v1/health/liveness", b"/api/v1/metrics"):
            probe = FakeExchange(gate, path)
            gate.handle(probe)
            assert probe.answer is None and inner.handled[-1] is probe
        sneaky = FakeExchange(gate, b"/api/v1/health/../../x")
        gate.handle(sneaky)
        assert sneaky.answer is not None and sneaky.answer[0] == 503

    run(scenario())


def test_a_late_event_loop_sheds_but_one_long_pause_does_not():
    async def scenario() -> None:
        gate, _, registry = admission(max_loop_lag=0.1)
        gate.note_lag(0.3)  # one long pause (a reload, a full collection): not overload
        first = FakeExchange(gate, b"/x")
        gate.handle(first)
        assert first.answer is None
        gate.note_lag(0.25)  # late again: the loop is saturated
        late = FakeExchange(gate, b"/x")
        gate.handle(late)
        assert late.answer is not None and late.answer[0] == 503
        assert shed_count(registry, "loop_lag") == 1
        gate.note_lag(0.001)  # caught up
        ok = FakeExchange(gate, b"/x")
        gate.handle(ok)
        assert ok.answer is None

    run(scenario())


def test_the_sampler_measures_a_saturated_loop():
    async def scenario() -> None:
        gate, _, _ = admission(max_loop_lag=0.1)
        gate.start()
        loop = asyncio.get_running_loop()
        seen: list[float] = []
        done = loop.create_future()

        def saturate(rounds: int) -> None:  # every loop iteration is one 0.2 s callback
            busy(0.2)
            seen.append(gate.lag)
            if rounds:
                loop.call_soon(saturate, rounds - 1)
            else:
                done.set_result(None)

        loop.call_soon(saturate, 6)
        await done
        assert max(seen) > 0.1
        await asyncio.sleep(0.3)  # punctual samples again
        assert gate.lag < 0.1
        gate.stop()

    run(scenario())


def test_zero_means_unbounded():
    async def scenario() -> None:
        gate, inner, _ = admission(max_in_flight=0, max_loop_lag=0)
        gate.lag = 100.0
        exchanges = [FakeExchange(gate, b"/x") for _ in range(10_000)]
        for exchange in exchanges:
            gate.handle(exchange)
        assert len(inner.handled) == 10_000

    run(scenario())


def test_restart_delay_backs_off_only_when_a_worker_keeps_dying_young():
    assert [restart_delay(n) for n in range(7)] == [0.0, 0.0, 0.5, 1.0, 2.0, 4.0, 8.0]
    assert restart_delay(100) == 30.0
