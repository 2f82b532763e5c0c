"""The admin API's pieces without a gateway: an operator's breaker override, draining a
target, the refused-keys sketch, secret masking, and merging the workers' reports."""

from __future__ import annotations

import asyncio

import pytest

from potok.admin import rate_limits, services
from potok.admin.config_view import MASK, masked
from potok.config.loader import load_config_text
from potok.config.models import ServiceConfig
from potok.config.resilience import CircuitBreakerConfig
from potok.policies.rate_limit.refused import CAPACITY, GENERATION, LimitInfo, RefusedKeys
from potok.upstream.circuit_breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from potok.upstream.service import Service
from potok.upstream.target import Target


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# Breaker overrides -------------------------------------------------------------------


def test_a_breaker_forced_open_refuses_until_released_then_probes_decide():
    clock = Clock()
    breaker = CircuitBreaker(CircuitBreakerConfig(open_for=5.0), clock)
    breaker.force("open", "maintenance")
    assert breaker.state == OPEN and breaker.reason == "maintenance"
    clock.now += 10_000  # the open time never runs out while held
    assert not breaker.allow()
    assert breaker.reported_state() == OPEN
    assert breaker.retry_after() == 5.0  # a hint (the configured open time), never inf
    breaker.force("auto", "released")
    assert breaker.state == HALF_OPEN and breaker.forced is None
    assert breaker.allow()
    breaker.record_success()
    breaker.allow()
    breaker.record_success()
    assert breaker.state == CLOSED


def test_a_breaker_forced_closed_never_trips_and_release_keeps_it_closed():
    breaker = CircuitBreaker(CircuitBreakerConfig(consecutive_failures=2), Clock())
    breaker.force("closed", "hold")
    for _ in range(10):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == CLOSED
    breaker.force("auto", "released")
    assert breaker.state == CLOSED
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == OPEN  # trips again once released


def test_the_breaker_says_why_it_moved_and_how_long_it_is_open():
    clock = Clock()
    breaker = CircuitBreaker(CircuitBreakerConfig(consecutive_failures=1, open_for=30.0), clock)
    breaker.record_failure()
    clock.now += 4
    assert breaker.reason == "1 consecutive failures"
    assert breaker.opened_for() == pytest.approx(4)
    assert breaker.retry_after() == pytest.approx(26)


# Draining ------------------------------------------------------------------------------


def service(*ports: int) -> Service:
    config = ServiceConfig(targets=[{"url": f"http://127.0.0.1:{port}"} for port in ports])  # type: ignore[list-item]
    return Service("svc", config)


def test_a_drained_target_is_never_chosen_and_comes_back_when_enabled():
    svc = service(1, 2, 3)
    svc.drain("127.0.0.1:2", True)
    chosen = {svc.choose().name for _ in range(30)}
    assert chosen == {"127.0.0.1:1", "127.0.0.1:3"}
    assert svc.has_healthy_untried([svc.targets[0], svc.targets[2]]) is False
    svc.drain("127.0.0.1:2", False)
    assert {svc.choose().name for _ in range(30)} == {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}


def test_the_last_serving_target_cannot_be_drained_and_unknown_ones_are_named():
    svc = service(1, 2)
    svc.drain("127.0.0.1:1", True)
    with pytest.raises(ValueError, match="last target"):
        svc.drain("127.0.0.1:2", True)
    with pytest.raises(KeyError):
        svc.drain("127.0.0.1:9", True)


def test_a_drain_survives_a_new_target_set_from_discovery():
    svc = service(1, 2)
    svc.drain("127.0.0.1:1", True)
    kept = svc.targets[0]
    fresh = Target("http://127.0.0.1:3", 1, kept.pool)
    svc.use_targets((kept, fresh))
    assert {svc.choose().name for _ in range(10)} == {"127.0.0.1:3"}


# The refused-keys sketch ---------------------------------------------------------------------


INFO = LimitInfo("route", "10-per-1s", 10, 1.0, "sliding_window", "ip", "memory")


def test_the_sketch_is_bounded_and_keeps_the_heavy_hitters():
    sketch = RefusedKeys(INFO)
    for round_ in range(50):
        sketch.add("ip:heavy", 1.0)
        sketch.add("ip:second", 1.0)
        sketch.add("ip:second", 1.0)
        for other in range(10):
            sketch.add(f"ip:{round_}-{other}", 1.0)  # a flood of one-off keys
    assert len(sketch.top(1000)) <= CAPACITY
    top = sketch.top(2)
    assert [key for key, _, _ in top] == ["ip:second", "ip:heavy"]
    assert top[0][1] >= 100 and top[1][1] >= 50  # never undercounted
    assert sketch.total == 50 * 13


def test_the_sketch_forgets_what_is_two_generations_old():
    sketch = RefusedKeys(INFO)
    sketch.add("ip:old", 0.0)
    sketch.add("ip:new", GENERATION + 1)  # the old key is one generation back: still shown
    assert {key for key, _, _ in sketch.top()} == {"ip:old", "ip:new"}
    sketch.add("ip:newer", 2 * GENERATION + 2)
    assert {key for key, _, _ in sketch.top()} == {"ip:new", "ip:newer"}
    sketch.add("ip:later", 10 * GENERATION)  # quiet for long: nothing older is kept
    assert [key for key, _, _ in sketch.top()] == ["ip:later"]


# Masking ---------------------------------------------------------------------------------


def test_secrets_are_masked_and_settings_are_not():
    config = load_config_text(
        """
redis: {url: "redis://user:hunter2@127.0.0.1:6379/0"}
database: {url: "postgresql://potok:pg-secret@db:5432/potok"}
auth:
  token_service:
    enabled: true
    signing: {algorithm: HS256, secret: "a-long-enough-hmac-secret-for-the-test-0123"}
services:
  up:
    targets: [http://127.0.0.1:9]
    api_key: {header: X-Key, value: upstream-key-value}
routes:
  - match: {prefix: /}
    service: up
    policies: {rate_limit: {limit: 5, window: 1s, key: ip, store: redis}}
"""
    )
    document = masked(config)
    text = repr(document)
    for secret in ("hunter2", "pg-secret", "a-long-enough-hmac", "upstream-key-value"):
        assert secret not in text
    assert document["redis"]["url"] == f"redis://user:{MASK}@127.0.0.1:6379/0"
    assert document["database"]["url"] == f"postgresql://potok:{MASK}@db:5432/potok"
    assert document["services"]["up"]["api_key"] == {"header": "X-Key", "value": MASK}
    assert document["routes"][0]["policies"]["rate_limit"]["key"] == "ip"


# Merging workers -------------------------------------------------------------------------


def _report(state: str, healthy: bool, inflight: int) -> dict:
    breaker = {"state": state, "reason": "", "forced": None, "open_for_s": 0, "half_open_in_s": 0}
    target = {
        "target": "t:1",
        "healthy": healthy,
        "drained": False,
        "ejections": 1,
        "in_flight": inflight,
        "idle_connections": 2,
    }
    return {
        "s": {"balancer": "round_robin", "breaker": breaker, "bulkhead": None, "targets": [target]}
    }


def test_services_merge_sums_counts_and_keeps_each_workers_breaker():
    merged = services.merge({"0": _report("closed", True, 3), "1": _report("open", False, 4)})["s"]
    assert merged["breaker"] == "mixed"
    assert set(merged["breakers"]) == {"0", "1"}
    target = merged["targets"][0]
    assert target["in_flight"] == 7 and target["ejections"] == 2 and target["idle_connections"] == 4
    assert target["healthy"] is False and target["unhealthy_in"] == ["1"]
    same = services.merge({"0": _report("open", True, 0), "1": _report("open", True, 0)})["s"]
    assert same["breaker"] == "open"


def test_rate_limits_merge_adds_refusals_of_the_same_key():
    def limit(counts: dict[str, int]) -> list[dict]:
        return [
            {
                "name": "n",
                "label": "l",
                "routes": ["r"],
                "refused_total": sum(counts.values()),
                "top_keys": [{"key": k, "refused": v, "overcount": 0} for k, v in counts.items()],
            }
        ]

    merged = rate_limits.merge({"0": limit({"a": 3, "b": 1}), "1": limit({"b": 5})})
    assert merged[0]["refused_total"] == 9
    assert [(k["key"], k["refused"]) for k in merged[0]["top_keys"]] == [("b", 6), ("a", 3)]


# The channel between workers ------------------------------------------------------------------


def test_workers_answer_each_other_over_private_sockets(tmp_path):
    from potok.admin.agent import WorkerAgent
    from potok.admin.cluster import Cluster
    from potok.observability.metrics import GatewayMetrics, MetricsRegistry

    def cluster(worker: str) -> Cluster:
        metrics = GatewayMetrics(MetricsRegistry(worker))
        agent = WorkerAgent(worker, lambda: None, metrics)  # type: ignore[arg-type,return-value]
        return Cluster(agent, tmp_path, timeout=2.0)

    async def scenario() -> None:
        first, second = cluster("0"), cluster("1")
        await first.start()
        await second.start()
        assert (tmp_path / "admin-1.sock").stat().st_mode & 0o777 == 0o600
        replies = await first.ask("no-such-op")
        assert sorted(replies) == ["0", "1"]
        assert all(
            r == {"ok": False, "status": 400, "detail": r["detail"]} for r in replies.values()
        )
        await second.close()
        (tmp_path / "admin-1.sock").touch()  # a dead worker's leftover: nobody listens
        gone = await first.ask("no-such-op")
        assert gone["1"]["status"] == 503 and "unreachable" in gone["1"]["detail"]
        await first.close()

    asyncio.run(scenario())
