"""The resilience state machines, driven by a fake clock: no sleeping."""

from __future__ import annotations

import asyncio

import pytest

from potok.config.resilience import (
    BackoffConfig,
    CircuitBreakerConfig,
    HealthCheckConfig,
    PassiveEjectionConfig,
    RetryBudgetConfig,
    RetryConfig,
)
from potok.upstream.bulkhead import Bulkhead, BulkheadFull
from potok.upstream.circuit_breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, RollingWindow
from potok.upstream.health import TargetHealth
from potok.upstream.retry import Backoff, RetryBudget, RetryPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def breaker(clock: Clock, **overrides: object) -> tuple[CircuitBreaker, list[tuple[int, int, str]]]:
    moves: list[tuple[int, int, str]] = []
    config = CircuitBreakerConfig(**overrides)  # type: ignore[arg-type]
    return CircuitBreaker(config, clock, lambda a, b, why: moves.append((a, b, why))), moves


def test_opens_on_the_fifth_consecutive_failure():
    clock = Clock()
    cb, moves = breaker(clock)
    for _ in range(4):
        assert cb.allow()
        cb.record_failure()
    assert cb.state == CLOSED
    assert cb.allow()
    cb.record_failure()
    assert cb.state == OPEN
    assert moves == [(CLOSED, OPEN, "5 consecutive failures")]
    assert not cb.allow()
    assert cb.retry_after() == pytest.approx(60.0)


def test_a_success_resets_the_consecutive_count():
    cb, _ = breaker(Clock())
    for _ in range(4):
        cb.record_failure()
    cb.record_success()
    for _ in range(4):
        cb.record_failure()
    assert cb.state == CLOSED


def test_half_open_after_the_open_time_then_closes_after_two_successes():
    clock = Clock()
    cb, moves = breaker(clock)
    for _ in range(5):
        cb.record_failure()
    clock.advance(59.9)
    assert not cb.allow()
    clock.advance(0.2)
    assert cb.allow() and cb.state == HALF_OPEN
    assert cb.allow() and cb.allow()
    assert not cb.allow(), "half-open admits a bounded number of probes"
    cb.record_success()
    assert cb.state == HALF_OPEN
    cb.record_success()
    assert cb.state == CLOSED
    assert [m[1] for m in moves] == [OPEN, HALF_OPEN, CLOSED]


def test_a_failed_probe_reopens():
    clock = Clock()
    cb, _ = breaker(clock)
    for _ in range(5):
        cb.record_failure()
    clock.advance(61)
    assert cb.allow()
    cb.record_failure()
    assert cb.state == OPEN
    assert cb.retry_after() == pytest.approx(60.0)


def test_open_time_grows_on_repeated_trips_and_is_capped():
    clock = Clock()
    cb, _ = breaker(clock, grow=True, open_for=10, open_for_max=25)
    for _ in range(5):
        cb.record_failure()
    waits = []
    for _ in range(3):
        waits.append(round(cb.retry_after()))
        clock.advance(cb.retry_after() + 0.01)
        assert cb.allow()
        cb.record_failure()
    assert waits == [10, 20, 25]


def test_error_rate_trips_with_interleaved_successes():
    clock = Clock()
    cb, moves = breaker(clock, min_requests=20, error_rate=0.5)
    # Alternate: never 5 failures in a row, but 11/20 failures > 50 %.
    outcomes = [False, True] * 9 + [False, False]
    for ok in outcomes:
        assert cb.allow()
        (cb.record_success if ok else cb.record_failure)()
    assert cb.state == OPEN
    assert "error rate 11/20" in moves[-1][2]


def test_error_rate_needs_the_minimum_number_of_requests():
    cb, _ = breaker(Clock(), min_requests=20, consecutive_failures=100)
    for ok in [False, True] * 9:
        (cb.record_success if ok else cb.record_failure)()
    assert cb.state == CLOSED


def test_the_window_forgets_old_failures():
    clock = Clock()
    cb, _ = breaker(clock, min_requests=4, consecutive_failures=100, window=10)
    cb.record_failure()
    cb.record_failure()
    clock.advance(11)
    cb.record_success()
    cb.record_success()
    cb.record_failure()
    assert cb.state == CLOSED  # 1/3 in the window, old ones gone


def test_rolling_window_counts():
    clock = Clock()
    window = RollingWindow(10, clock)
    for _ in range(3):
        window.add(True)
    window.add(False)
    clock.advance(5)
    window.add(False)
    assert window.totals() == (5, 2)
    clock.advance(6)
    assert window.totals() == (1, 1)


def test_cancelled_probe_frees_its_slot():
    clock = Clock()
    cb, _ = breaker(clock, half_open_probes=1, success_threshold=1)
    for _ in range(5):
        cb.record_failure()
    clock.advance(61)
    assert cb.allow()
    assert not cb.allow()
    cb.record_cancelled()
    assert cb.allow()


def test_retry_budget():
    budget = RetryBudget(RetryBudgetConfig(ratio=0.2, min_concurrent=3))
    budget.active_requests = 100
    budget.active_retries = 19
    assert budget.can_retry()
    budget.active_retries = 20
    assert not budget.can_retry()
    budget.active_requests = 1
    budget.active_retries = 2
    assert budget.can_retry()  # the floor
    budget.active_retries = 3
    assert not budget.can_retry()


def test_backoff_is_full_jitter_capped():
    backoff = Backoff(BackoffConfig(initial=0.1, multiplier=2, max=1.0), rng=lambda: 1.0)
    assert [backoff.delay(n) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert Backoff(BackoffConfig(), rng=lambda: 0.0).delay(3) == 0.0


def test_safe_requests():
    policy = RetryPolicy(RetryConfig(), RetryBudget(RetryBudgetConfig()))
    assert policy.is_safe(b"GET", [])
    assert policy.is_safe(b"DELETE", [])
    assert not policy.is_safe(b"POST", [(b"X-Other", b"1")])
    assert policy.is_safe(b"POST", [(b"idempotency-key", b"abc")])
    assert not policy.is_safe(b"PATCH", [])


def test_passive_ejection_doubles_and_readmits():
    clock = Clock()
    changes: list[str] = []
    health = TargetHealth(
        PassiveEjectionConfig(consecutive_failures=3, base_ejection=10, max_ejection=25),
        None,
        changes.append,
        clock,
    )
    for _ in range(3):
        health.record_failure()
    assert not health.available()
    clock.advance(10.1)
    assert health.available()
    for _ in range(3):
        health.record_failure()
    assert not health.available()
    clock.advance(19)
    assert not health.available()  # second ejection is 20 s
    clock.advance(1.2)
    assert health.available()
    health.record_success()
    for _ in range(3):
        health.record_failure()
    clock.advance(10.1)
    assert health.available(), "a success after coming back resets the backoff"
    assert len(changes) == 3


def test_active_checks_eject_and_readmit_with_thresholds():
    changes: list[str] = []
    health = TargetHealth(
        None, HealthCheckConfig(healthy_threshold=2, unhealthy_threshold=3), changes.append
    )
    health.check_failed("x")
    health.check_failed("x")
    assert health.available()
    health.check_failed("x")
    assert not health.available()
    health.check_passed()
    assert not health.available()
    health.check_passed()
    assert health.available()
    assert changes[0].startswith("unhealthy") and changes[1].startswith("healthy")


def test_with_active_checks_an_ejected_target_needs_passing_checks():
    clock = Clock()
    health = TargetHealth(
        PassiveEjectionConfig(consecutive_failures=1, base_ejection=5),
        HealthCheckConfig(healthy_threshold=1),
        lambda _: None,
        clock,
    )
    health.record_failure()
    clock.advance(6)
    assert not health.available()
    health.check_passed()
    assert health.available()


async def test_bulkhead_limits_queues_and_times_out():
    bulkhead = Bulkhead(max_concurrent=2, max_queued=1, queue_timeout=0.2)
    assert bulkhead.try_acquire() and bulkhead.try_acquire()
    assert not bulkhead.try_acquire()
    waiter = asyncio.ensure_future(bulkhead.acquire())
    await asyncio.sleep(0)
    with pytest.raises(BulkheadFull):
        await bulkhead.acquire()  # queue full
    bulkhead.release()  # hands the slot to the waiter
    await waiter
    assert bulkhead.in_use == 2
    with pytest.raises(BulkheadFull):
        await bulkhead.acquire()  # waits 0.2 s, times out
    bulkhead.release()
    bulkhead.release()
    assert bulkhead.in_use == 0


def test_invalid_breaker_config_names_the_problem():
    with pytest.raises(ValueError, match="success_threshold cannot exceed half_open_probes"):
        CircuitBreakerConfig(half_open_probes=1, success_threshold=2)


@pytest.mark.parametrize(
    ("block", "path", "message"),
    [
        ({"circuit_breaker": {"window": 0}}, "services.s.circuit_breaker.window", "greater than 0"),
        (
            {"circuit_breaker": {"consecutive_failures": -1}},
            "services.s.circuit_breaker.consecutive_failures",
            "greater than or equal to 1",
        ),
        (
            {"circuit_breaker": {"half_open_probes": 1, "success_threshold": 3}},
            "services.s.circuit_breaker",
            "success_threshold cannot exceed half_open_probes",
        ),
        ({"circuit_breaker": {"error_rate": 1.5}}, "services.s.circuit_breaker.error_rate", "1"),
        ({"retry": {"attempts": 0}}, "services.s.retry.attempts", "greater than or equal to 1"),
        ({"retry": {"on_status": [404]}}, "services.s.retry.on_status", "only 5xx"),
        ({"retry": {"budget": {"ratio": 0}}}, "services.s.retry.budget.ratio", "greater than 0"),
        (
            {"health_check": {"path": "health", "interval": "1s"}},
            "services.s.health_check.path",
            "starting with '/'",
        ),
        ({"health_check": {"interval": "-5s"}}, "services.s.health_check.interval", "duration"),
        (
            {"bulkhead": {"max_concurrent": 0}},
            "services.s.bulkhead.max_concurrent",
            "greater than or equal to 1",
        ),
    ],
)
def test_bad_resilience_config_names_the_field(block, path, message):
    import yaml

    from potok.config.loader import ConfigError, load_config_text

    text = yaml.safe_dump({"services": {"s": {"targets": ["http://127.0.0.1:1"], **block}}})
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, env={})
    problems = dict(caught.value.problems)
    assert path in problems, problems
    assert message in problems[path]


def test_refused_connect_ejects_at_once_with_the_usual_backoff():
    clock = Clock()
    changes: list[str] = []
    health = TargetHealth(
        PassiveEjectionConfig(consecutive_failures=5, base_ejection=10, max_ejection=40),
        None,
        changes.append,
        clock,
    )
    health.eject_now("connection refused")
    assert not health.available()
    assert changes == ["ejected: connection refused; out for 10s"]
    health.eject_now("connection refused")  # already out: no second ejection
    assert health.ejections == 1
    clock.advance(10.1)
    health.eject_now("connection refused")
    clock.advance(19)
    assert not health.available(), "the second ejection is twice as long"
    without_ejection = TargetHealth(None, None, changes.append, clock)
    without_ejection.eject_now("connection refused")
    assert without_ejection.available(), "passive_ejection: null keeps every target in"


def test_breaker_reports_half_open_once_the_open_time_is_over():
    clock = Clock()
    cb, moves = breaker(clock, consecutive_failures=1, open_for=10)
    cb.record_failure()
    assert cb.reported_state() == OPEN
    clock.advance(9.9)
    assert cb.reported_state() == OPEN
    clock.advance(0.2)
    # No request has moved it yet, but the next one would be let through as a probe.
    assert cb.state == OPEN and cb.reported_state() == HALF_OPEN
    assert cb.allow() and cb.state == HALF_OPEN
    assert [m[1] for m in moves] == [OPEN, HALF_OPEN]


def test_a_failed_call_blames_the_service_only_when_no_good_target_is_left():
    from potok.config.loader import load_config_text
    from potok.upstream.service import Service

    config = load_config_text(
        "services: {s: {targets: ['http://127.0.0.1:1', 'http://127.0.0.1:2']}}", env={}
    )
    service = Service("s", config.services["s"])
    first, second = service.targets
    assert service.has_healthy_untried([first])
    second.failing = True
    assert not service.has_healthy_untried([first]), "the other one failed its last attempt"
    second.failing = False
    assert second.health is not None
    second.health.eject_now("connection refused")
    assert not service.has_healthy_untried([first]), "the other one is ejected"
    assert not service.has_healthy_untried([first, second])
