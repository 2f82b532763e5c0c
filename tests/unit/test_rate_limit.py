"""Rate limiting: the algorithms with an injected clock, keys, config errors, and one
contract suite run against both stores (memory, and the Lua script on real Redis)."""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from potok.config.loader import ConfigError, load_config_text
from potok.config.redis import RedisConfig
from potok.exchange import Exchange
from potok.policies.rate_limit.algorithms import (
    Decision,
    MemoryLimiter,
    MemoryTable,
    SlidingWindow,
    TokenBucket,
)
from potok.policies.rate_limit.config import LimitConfig, RateLimitConfig
from potok.policies.rate_limit.keys import key_function
from potok.policies.rate_limit.limiter import algorithm_for, policy_header
from potok.policies.rate_limit.redis_connection import ScriptClient
from potok.policies.rate_limit.redis_store import (
    SCRIPT,
    SLIDING_WINDOW,
    TOKEN_BUCKET,
    LimitSpec,
    RedisLimitStore,
    StoreUnavailable,
)
from potok.redis_clients import endpoint_from_url

REDIS_URL = "redis://127.0.0.1:6379/0"

# --------------------------------------------------------------- algorithms --


def test_sliding_window_admits_exactly_limit_then_rolls_over() -> None:
    window = SlidingWindow(3, 10.0)
    state = window.new_state()
    for i in range(3):
        check = window.check(state, 100.0 + i)
        assert check.admitted and check.remaining == 2 - i
        window.take(state, 100.0 + i)
    refused = window.check(state, 105.0)
    assert not refused.admitted
    assert refused.retry_after == pytest.approx(5.0)  # the first one leaves at 110
    assert not window.check(state, 109.999).admitted
    again = window.check(state, 110.0)
    assert again.admitted and again.remaining == 0  # 101 and 102 still count


def test_sliding_window_is_exact_over_any_interval() -> None:
    window = SlidingWindow(5, 1.0)
    state = window.new_state()
    admitted: list[float] = []
    now = 0.0
    while now < 10.0:
        if window.check(state, now).admitted:
            window.take(state, now)
            admitted.append(now)
        now = round(now + 0.01, 2)
    for start in admitted:
        assert sum(1 for t in admitted if start <= t < start + 1.0) <= 5
    assert len(admitted) == 50  # 5 per second for 10 seconds


def test_token_bucket_burst_then_steady_rate() -> None:
    bucket = TokenBucket(10, 10.0, burst=3)  # one token a second, three at most
    state = bucket.new_state()
    for _ in range(3):
        assert bucket.check(state, 0.0).admitted
        bucket.take(state, 0.0)
    refused = bucket.check(state, 0.25)
    assert not refused.admitted
    assert refused.retry_after == pytest.approx(0.75)
    assert bucket.check(state, 1.0).admitted
    bucket.take(state, 1.0)
    assert not bucket.check(state, 1.5).admitted
    assert bucket.check(state, 100.0).remaining == 2  # refilled to the burst, not beyond


def test_token_bucket_reset_is_time_to_next_token() -> None:
    bucket = TokenBucket(60, 60.0)
    state = bucket.new_state()
    check = bucket.check(state, 0.0)
    bucket.take(state, 0.0)
    assert check.remaining == 59 and check.reset == pytest.approx(1.0)


@pytest.mark.parametrize(
    "policy",
    [
        {"limit": 5, "window": "1s"},
        {"limit": 5, "window": "1s", "algorithm": "token_bucket"},
        {"limit": 3, "window": "2s", "algorithm": "token_bucket", "burst": 6},
        {"limit": 4, "window": "1s", "key": "header:x-client"},
        # Longer than a second / slower than a token a second: t is computed per request.
        {"limit": 5, "window": "3s"},
        {"limit": 2, "window": "4s", "algorithm": "token_bucket"},
    ],
    ids=["sliding", "bucket", "bucket-burst", "sliding-by-header", "sliding-3s", "bucket-slow"],
)
def test_the_one_limit_checks_decide_as_the_algorithms(policy: dict[str, Any]) -> None:
    """The memory store's one-limit checks write the algorithm out inline (memory.py):
    they must admit, refuse and report exactly as `check` + `take` on the same clock."""
    import random

    from potok.errors import GatewayError
    from potok.http.settings import ServerSettings
    from potok.policies.base import BuildContext
    from potok.policies.rate_limit import policy as rate_limit
    from potok.resources import Resources

    config = RateLimitConfig.model_validate(policy)
    clock = FakeClock()
    context = BuildContext("r", ServerSettings(), {}, Resources())
    built = rate_limit.build(config, context)
    assert built is not None and built.on_request is not None
    reference = algorithm_for(config.effective_limits()[0])
    state = reference.new_state()
    rng = random.Random(7)
    for _ in range(2000):
        clock.now += rng.choice((0.0, 0.001, 0.05, 0.2, 0.7))
        expected = reference.check(state, clock.now)
        if expected.admitted:
            reference.take(state, clock.now)
        exchange = SimpleNamespace(
            started=clock.now,  # the memory checks count a request at its arrival
            client_ip="10.0.0.1",
            headers=[(b"X-Client", b"c1")],
            identity=None,
            path=b"/x",
            response_lines=b"",
        )
        try:
            built.on_request(exchange)  # type: ignore[arg-type]
        except GatewayError as refusal:
            assert not expected.admitted and refusal.status == 429
            retry = max(1, math.ceil(expected.retry_after - 1e-9))
            assert (b"Retry-After", b"%d" % retry) in refusal.headers
            continue
        assert expected.admitted
        seconds = max(1, math.ceil(expected.reset - 1e-9))
        assert exchange.response_lines.endswith(
            b";r=%d;t=%d\r\n" % (expected.remaining, seconds)
        ), (exchange.response_lines, expected)


def test_multi_limit_counts_only_when_all_admit() -> None:
    clock = SimpleNamespace(now=0.0)
    per_second = MemoryTable(SlidingWindow(2, 1.0))
    per_minute = MemoryTable(SlidingWindow(3, 60.0))
    limiter = MemoryLimiter([per_second, per_minute])
    results = [limiter.acquire(["k", "k"], clock.now).admitted for _ in range(3)]
    assert results == [True, True, False]
    assert len(per_minute.states["k"]) == 2  # the refused one did not count per minute
    clock.now = 1.5
    third = limiter.acquire(["k", "k"], clock.now)
    assert third.admitted and third.index == 1 and third.remaining == 0
    clock.now = 2.6
    refused = limiter.acquire(["k", "k"], clock.now)
    assert not refused.admitted and refused.index == 1  # the minute limit refuses
    assert refused.retry_after == pytest.approx(57.4)


def test_memory_table_stays_bounded() -> None:
    table = MemoryTable(SlidingWindow(1, 1.0), max_keys=100)
    limiter = MemoryLimiter([table])
    for i in range(1000):
        limiter.acquire([f"k{i}"], 0.0)
    assert len(table.states) <= 100


# --------------------------------------------------------------------- keys --


def exchange(identity: Any = None, headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    return SimpleNamespace(client_ip="192.0.2.7", identity=identity, headers=headers or [])


@pytest.mark.parametrize(
    ("spec", "identity", "expected"),
    [
        ("ip", None, "ip:192.0.2.7"),
        ("user", None, "ip:192.0.2.7"),
        ("user", SimpleNamespace(subject="alice", kind="user"), "user:alice"),
        ("user", SimpleNamespace(subject="k1", kind="api_key"), "ip:192.0.2.7"),
        ("api_key", SimpleNamespace(subject="k1", kind="api_key"), "key:k1"),
        ("api_key", SimpleNamespace(subject="alice", api_key_id="k9"), "key:k9"),
        ("api_key", SimpleNamespace(subject="alice", kind="user"), "ip:192.0.2.7"),
        ("route", None, "route"),
        ("user", object(), "ip:192.0.2.7"),  # an identity without a subject
    ],
)
def test_keys(spec: str, identity: Any, expected: str) -> None:
    assert key_function(spec)(exchange(identity)) == expected


def test_header_key_is_case_insensitive_and_bounded() -> None:
    key = key_function("header:x-tenant")
    assert key(exchange(headers=[(b"X-Tenant", b"acme")])) == "h:x-tenant:acme"
    assert key(exchange()) == "ip:192.0.2.7"
    long = key(exchange(headers=[(b"x-tenant", b"a" * 500)]))
    assert len(long) < 60


# ------------------------------------------------------------------- config --


def load(doc: dict[str, Any]) -> Any:
    return load_config_text(yaml.safe_dump(doc), env={})


def problems(doc: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load(doc)
    return info.value.problems


def routed(policies: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {
        "services": {"svc": {"targets": ["http://127.0.0.1:9001"]}},
        "routes": [{"match": {"prefix": "/"}, "service": "svc", "policies": policies}],
        **top,
    }


def test_defaults_are_100_per_60s_per_ip() -> None:
    config = load(routed({"rate_limit": {}}))
    (limit,) = config.routes[0].policies.rate_limit.effective_limits()
    assert (limit.limit, limit.window, limit.key, limit.algorithm) == (
        100,
        60.0,
        "ip",
        "sliding_window",
    )
    assert policy_header([limit]) == b'"100-per-60s";q=100;w=60'


@pytest.mark.parametrize(
    ("policy", "path", "message"),
    [
        (
            {"limits": [{"limit": 0}]},
            "routes[0].policies.rate_limit.limits[0].limit",
            "greater than 0",
        ),
        ({"limit": -1}, "routes[0].policies.rate_limit.limit", "greater than 0"),
        ({"window": "0s"}, "routes[0].policies.rate_limit.window", "greater than 0"),
        ({"key": "cookie"}, "routes[0].policies.rate_limit.key", "header:"),
        ({"key": "header:bad name"}, "routes[0].policies.rate_limit.key", "header name"),
        ({"algorithm": "leaky"}, "routes[0].policies.rate_limit.algorithm", "sliding_window"),
        ({"burst": 5}, "routes[0].policies.rate_limit", "token_bucket only"),
        ({"limit": 50_000}, "routes[0].policies.rate_limit", "token_bucket"),
        ({"limit": 5, "limits": [{"limit": 1}]}, "routes[0].policies.rate_limit", "not both"),
        ({"limits": [{"limit": 1}, {"limit": 1}]}, "routes[0].policies.rate_limit", "named"),
        ({"on_store_error": "maybe"}, "routes[0].policies.rate_limit.on_store_error", "allow"),
        ({"store": "redis"}, "", "routes[0].policies.rate_limit.store: 'redis' needs"),
    ],
)
def test_bad_config_names_the_field(policy: dict[str, Any], path: str, message: str) -> None:
    found = problems(routed({"rate_limit": policy}))
    assert len(found) == 1
    assert found[0][0] == path
    assert message in found[0][1]


def test_memory_store_refused_with_several_workers() -> None:
    (problem,) = problems(routed({"rate_limit": {}}, server={"workers": 2}))
    assert "routes[0].policies.rate_limit.store" in problem[1]
    assert "2x the limit" in problem[1]
    load(routed({"rate_limit": {"store": "redis"}}, server={"workers": 2}, redis={}))


def test_limit_config_is_documented() -> None:
    for model in (LimitConfig, RateLimitConfig, RedisConfig):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"


# ----------------------------------------------------- contract: both stores --

LIMITS = {
    "sw3": LimitConfig(limit=3, window=10.0, name="sw3"),
    "tb2": LimitConfig(limit=1, window=1.0, algorithm="token_bucket", burst=2, name="tb2"),
    "min": LimitConfig(limit=4, window=60.0, name="min"),
}

Acquire = Callable[[list[str], list[str]], Any]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, FakeClock]]:
    """(acquire(limit_names, keys) -> Decision, clock) for one backend."""
    clock = FakeClock()
    if request.param == "memory":
        tables = {name: MemoryTable(algorithm_for(limit)) for name, limit in LIMITS.items()}

        async def acquire_memory(names: list[str], keys: list[str]) -> Decision:
            return MemoryLimiter([tables[n] for n in names]).acquire(keys, clock.now)

        yield acquire_memory, clock
        return
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)  # redis-py, only to clean up
    script_client = ScriptClient(endpoint_from_url(REDIS_URL), SCRIPT)
    prefix = f"test-contract:{os.getpid()}:{id(clock)}:"
    redis_store = RedisLimitStore(
        script_client, RedisConfig(), clock_us=lambda: round(clock.now * 1_000_000)
    )
    specs = {
        name: LimitSpec(
            name,
            TOKEN_BUCKET if limit.algorithm == "token_bucket" else SLIDING_WINDOW,
            limit.limit,
            limit.window,
            limit.burst or limit.limit,
        )
        for name, limit in LIMITS.items()
    }

    async def acquire_redis(names: list[str], keys: list[str]) -> Decision:
        return await redis_store.acquire(
            [specs[n] for n in names],
            [f"{prefix}{n}:{k}" for n, k in zip(names, keys, strict=True)],
        )

    yield acquire_redis, clock
    async for key in client.scan_iter(match=prefix + "*"):
        await client.delete(key)
    await client.aclose()
    await script_client.close()


async def test_contract_sliding_window(store: tuple[Any, FakeClock]) -> None:
    acquire, clock = store
    decisions = [await acquire(["sw3"], ["a"]) for _ in range(4)]
    assert [d.admitted for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    assert decisions[3].retry_after == pytest.approx(10.0, abs=0.001)
    assert (await acquire(["sw3"], ["b"])).admitted  # another key has its own quota
    clock.now += 9.9
    assert not (await acquire(["sw3"], ["a"])).admitted
    clock.now += 0.1
    assert (await acquire(["sw3"], ["a"])).admitted


async def test_contract_token_bucket(store: tuple[Any, FakeClock]) -> None:
    acquire, clock = store
    assert [(await acquire(["tb2"], ["a"])).admitted for _ in range(3)] == [True, True, False]
    clock.now += 0.5
    refused = await acquire(["tb2"], ["a"])
    assert not refused.admitted and refused.retry_after == pytest.approx(0.5, abs=0.001)
    clock.now += 0.5
    assert (await acquire(["tb2"], ["a"])).admitted
    clock.now += 60
    assert (await acquire(["tb2"], ["a"])).remaining == 1  # capped at burst


async def test_contract_all_or_nothing(store: tuple[Any, FakeClock]) -> None:
    acquire, clock = store
    results = []
    for _ in range(6):
        results.append(await acquire(["sw3", "min"], ["a", "a"]))
        clock.now += 0.001
    assert [d.admitted for d in results] == [True, True, True, False, False, False]
    assert results[3].index == 0  # the 3-per-10s limit refused
    clock.now += 10
    admitted = await acquire(["sw3", "min"], ["a", "a"])
    assert admitted.admitted and admitted.index == 1 and admitted.remaining == 0  # 4 of 4 per min
    refused = await acquire(["sw3", "min"], ["a", "a"])
    assert not refused.admitted and refused.index == 1


async def test_redis_store_fails_fast_when_unreachable() -> None:
    from tests.support.net import free_port

    client = ScriptClient(endpoint_from_url(f"redis://127.0.0.1:{free_port()}/0"), SCRIPT)
    config = RedisConfig(timeout=0.2, retry_interval=5.0)
    redis_store = RedisLimitStore(client, config)
    spec = LimitSpec("x", SLIDING_WINDOW, 1, 1.0, 1)
    with pytest.raises(StoreUnavailable):
        await redis_store.acquire([spec], ["k"])
    # Now marked down: the next check fails at once, without a connection attempt.
    assert redis_store.marked_down()
    with pytest.raises(StoreUnavailable, match="marked down"):
        await redis_store.acquire([spec], ["k"])
    await client.close()


@pytest.fixture
async def live_store() -> AsyncIterator[tuple[RedisLimitStore, str]]:
    """A store on the machine's Redis and a key prefix of its own (its keys deleted after)."""
    from redis.asyncio import Redis

    client = ScriptClient(endpoint_from_url(REDIS_URL), SCRIPT)
    prefix = f"test-store:{os.getpid()}:{id(client)}:"
    yield RedisLimitStore(client, RedisConfig()), prefix
    await client.close()
    cleanup = Redis.from_url(REDIS_URL)
    async for key in cleanup.scan_iter(match=prefix + "*"):
        await cleanup.delete(key)
    await cleanup.aclose()


async def test_redis_store_batches_one_tick_into_one_call(
    live_store: tuple[RedisLimitStore, str],
) -> None:
    import asyncio

    redis_store, prefix = live_store
    spec = LimitSpec("x", SLIDING_WINDOW, 50, 60.0, 50)
    decisions = await asyncio.gather(
        *(redis_store.acquire([spec], [prefix + "k"]) for _ in range(100))
    )
    assert sum(d.admitted for d in decisions) == 50
    assert redis_store.batches == 1
    # Once connected, the next tick's checks are one call too (the direct path).
    more = await asyncio.gather(*(redis_store.acquire([spec], [prefix + "j"]) for _ in range(20)))
    assert all(d.admitted for d in more) and redis_store.batches == 2


async def test_redis_store_reloads_a_forgotten_script_without_failing_a_check(
    live_store: tuple[RedisLimitStore, str],
) -> None:
    from redis.asyncio import Redis

    redis_store, prefix = live_store
    spec = LimitSpec("x", SLIDING_WINDOW, 5, 60.0, 5)
    assert (await redis_store.acquire([spec], [prefix + "k"])).remaining == 4
    flusher = Redis.from_url(REDIS_URL)
    await flusher.script_flush()  # as after a Redis restart: the next EVALSHA gets NOSCRIPT
    await flusher.aclose()
    assert (await redis_store.acquire([spec], [prefix + "k"])).remaining == 3
    assert (await redis_store.acquire([spec], [prefix + "k"])).remaining == 2
    assert not redis_store.marked_down()


async def test_a_settle_that_raises_does_not_strand_the_rest_of_its_batch(
    live_store: tuple[RedisLimitStore, str],
) -> None:
    import asyncio

    redis_store, prefix = live_store
    spec = LimitSpec("x", SLIDING_WINDOW, 10, 60.0, 10)
    loop = asyncio.get_running_loop()
    reported: list[Any] = []
    loop.set_exception_handler(lambda _, context: reported.append(context["exception"]))
    outcomes: list[Any] = []

    def settle(subject: str, outcome: Any) -> None:
        if subject == "buggy":
            raise RuntimeError("a bug in a policy")
        outcomes.append((subject, outcome[0]))

    for subject in ("first", "buggy", "last"):
        redis_store.submit([spec], [prefix + "k"], settle, subject)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if len(outcomes) == 2:
            break
    loop.set_exception_handler(None)
    assert outcomes == [("first", 1), ("last", 1)]
    assert [str(exc) for exc in reported] == ["a bug in a policy"]


def test_run_refuses_workers_override_that_breaks_a_memory_limit(tmp_path: Any) -> None:
    import subprocess
    import sys

    path = tmp_path / "potok.yaml"
    path.write_text(yaml.safe_dump(routed({"rate_limit": {}})))
    result = subprocess.run(
        [sys.executable, "-m", "potok", "run", "--config", str(path), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "routes[0].policies.rate_limit.store: the memory store counts" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------- pipeline: waiting without a task --


class FakeResponder:
    """What the pipeline reaches through an exchange: whether it is still answered, and
    what a bug does (as the server's `handler_failed`)."""

    peer_ip = "192.0.2.1"

    def __init__(self) -> None:
        self.current = True
        self.errors: list[str] = []

    def is_current(self, exchange: Any) -> bool:
        return self.current

    def handler_failed(self, exchange: Any, exc: Exception) -> None:
        self.errors.append("handler failed")
        exchange.problem(500)


class FakeExchange(Exchange):
    """A real Exchange on a fake responder; its answers are recorded, not sent."""

    def __init__(self) -> None:
        self.responder = FakeResponder()
        super().__init__(self.responder, 0.0)
        self.body = SimpleNamespace(detach=lambda: None)  # type: ignore[assignment]
        self.refused: int | None = None

    def problem(self, status: int, detail: str | None = None, **_: Any) -> None:
        self.refused = status


def waiting_pipeline(seen: list[str]) -> tuple[Any, Any]:
    import asyncio

    from potok.policies.base import Policy, Stage
    from potok.policies.pipeline import Pipeline

    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def limit(exchange: Any) -> asyncio.Future[None]:
        seen.append("limit")
        return waiter

    def validate(exchange: Any) -> None:
        seen.append("validate")

    pipeline = Pipeline(
        [
            Policy("validate", Stage.VALIDATE, on_request=validate),
            Policy("rate_limit", Stage.LIMIT, on_request=limit),
        ],
        terminal=lambda exchange: seen.append("upstream"),
    )
    return pipeline, waiter


async def test_pipeline_goes_on_after_a_waiting_hook_without_a_task() -> None:
    import asyncio

    seen: list[str] = []
    pipeline, waiter = waiting_pipeline(seen)
    tasks = len(asyncio.all_tasks())
    pipeline.run(FakeExchange())
    assert seen == ["limit"]
    assert len(asyncio.all_tasks()) == tasks  # no task per request
    waiter.set_result(None)
    await asyncio.sleep(0)
    assert seen == ["limit", "validate", "upstream"]


async def test_pipeline_refuses_with_the_waiting_hooks_error() -> None:
    import asyncio

    from potok.policies.rate_limit.limiter import TooManyRequests

    seen: list[str] = []
    pipeline, waiter = waiting_pipeline(seen)
    exchange = FakeExchange()
    pipeline.run(exchange)
    waiter.set_exception(TooManyRequests("over"))
    await asyncio.sleep(0)
    assert seen == ["limit"] and exchange.refused == 429


async def test_pipeline_stops_when_the_client_left_while_waiting() -> None:
    import asyncio

    seen: list[str] = []
    pipeline, waiter = waiting_pipeline(seen)
    exchange = FakeExchange()
    pipeline.run(exchange)
    exchange.responder.current = False
    waiter.set_result(None)
    await asyncio.sleep(0)
    assert seen == ["limit"] and exchange.refused is None


async def test_pipeline_with_a_coroutine_policy_awaits_a_waiting_hook() -> None:
    import asyncio

    from potok.policies.base import Policy, Stage
    from potok.policies.pipeline import Pipeline

    seen: list[str] = []
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def authenticate(exchange: Any) -> None:
        seen.append("auth")

    def limit(exchange: Any) -> asyncio.Future[None]:
        seen.append("limit")
        return waiter

    pipeline = Pipeline(
        [
            Policy("rate_limit", Stage.LIMIT, on_request=limit),
            Policy("auth_jwt", Stage.AUTHENTICATE, on_request_async=authenticate),
        ],
        terminal=lambda exchange: seen.append("upstream"),
    )
    pipeline.run(FakeExchange())
    for _ in range(3):
        await asyncio.sleep(0)
    assert seen == ["auth", "limit"]
    waiter.set_result(None)
    for _ in range(3):
        await asyncio.sleep(0)
    assert seen == ["auth", "limit", "upstream"]


def suspending_pipeline(seen: list[str], terminal: Callable[[Any], None] | None = None) -> Any:
    from potok.policies.base import SUSPENDED, Policy, Stage
    from potok.policies.pipeline import Pipeline

    def limit(exchange: Any) -> Any:
        seen.append("limit")
        return SUSPENDED

    def validate(exchange: Any) -> None:
        seen.append("validate")

    return Pipeline(
        [
            Policy("validate", Stage.VALIDATE, on_request=validate),
            Policy("rate_limit", Stage.LIMIT, on_request=limit),
        ],
        terminal=terminal or (lambda exchange: seen.append("upstream")),
    )


async def test_a_suspended_request_resumes_at_the_next_hook_in_the_same_call() -> None:
    import asyncio

    seen: list[str] = []
    pipeline = suspending_pipeline(seen)
    exchange = FakeExchange()
    tasks = len(asyncio.all_tasks())
    pipeline.run(exchange)
    assert seen == ["limit"] and len(asyncio.all_tasks()) == tasks
    exchange.resume()
    assert seen == ["limit", "validate", "upstream"]  # no loop iteration in between


async def test_a_suspended_request_is_refused_with_the_policys_error() -> None:
    from potok.policies.rate_limit.limiter import TooManyRequests

    seen: list[str] = []
    pipeline = suspending_pipeline(seen)
    exchange = FakeExchange()
    pipeline.run(exchange)
    exchange.resume(TooManyRequests("over"))
    assert seen == ["limit"] and exchange.refused == 429


async def test_resume_after_the_client_left_does_nothing() -> None:
    seen: list[str] = []
    pipeline = suspending_pipeline(seen)
    exchange = FakeExchange()
    pipeline.run(exchange)
    exchange.responder.current = False
    exchange.resume()
    assert seen == ["limit"] and exchange.refused is None


async def test_a_bug_after_resume_answers_500_and_does_not_raise_into_the_store() -> None:
    def broken(exchange: Any) -> None:
        raise RuntimeError("terminal bug")

    seen: list[str] = []
    pipeline = suspending_pipeline(seen, terminal=broken)
    exchange = FakeExchange()
    pipeline.run(exchange)
    exchange.resume()
    assert exchange.refused == 500 and exchange.responder.errors == ["handler failed"]


async def test_a_suspending_hook_on_a_route_with_a_coroutine_policy() -> None:
    import asyncio

    from potok.policies.base import SUSPENDED, Policy, Stage
    from potok.policies.pipeline import Pipeline
    from potok.policies.rate_limit.limiter import TooManyRequests

    for refusal in (None, TooManyRequests("over")):
        seen: list[str] = []

        async def authenticate(exchange: Any, seen: list[str] = seen) -> None:
            seen.append("auth")

        def limit(exchange: Any, seen: list[str] = seen) -> Any:
            seen.append("limit")
            return SUSPENDED

        pipeline = Pipeline(
            [
                Policy("rate_limit", Stage.LIMIT, on_request=limit),
                Policy("auth_jwt", Stage.AUTHENTICATE, on_request_async=authenticate),
            ],
            terminal=lambda exchange, seen=seen: seen.append("upstream"),
        )
        exchange = FakeExchange()
        pipeline.run(exchange)
        for _ in range(3):
            await asyncio.sleep(0)
        assert seen == ["auth", "limit"] and exchange.resume_waiter is not None
        exchange.resume(refusal)
        for _ in range(3):
            await asyncio.sleep(0)
        if refusal is None:
            assert seen == ["auth", "limit", "upstream"]
        else:
            assert seen == ["auth", "limit"] and exchange.refused == 429
