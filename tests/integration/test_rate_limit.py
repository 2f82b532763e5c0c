"""Rate limiting over real sockets: exact across three gateway processes sharing one real
Redis, exact in memory, window rollover and Retry-After, X-Forwarded-For spoofing,
concurrency limits."""

from __future__ import annotations

import asyncio
import math
import os
import time
import uuid
from collections import Counter
from typing import Any

import aiohttp
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.net import request

REDIS_URL = "redis://127.0.0.1:6379/0"


def prefix() -> str:
    """A key prefix of its own per test, so runs (and other suites) never share counters."""
    return f"t{os.getpid()}-{uuid.uuid4().hex[:8]}:"


def limited_config(upstream_url: str, rate_limit: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {
        "services": {"up": {"targets": [upstream_url]}},
        "routes": [
            {
                "name": "limited",
                "match": {"prefix": "/"},
                "service": "up",
                "policies": {"rate_limit": rate_limit},
            },
        ],
        "logging": {"level": "warning"},
        **top,
    }


async def burst(urls: list[str], total: int, per_gateway_connections: int = 100) -> Counter[int]:
    """`total` concurrent GETs spread round-robin over `urls`; the count of each status."""
    sessions = [
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=per_gateway_connections))
        for _ in urls
    ]
    statuses: Counter[int] = Counter()

    async def one(index: int) -> None:
        session = sessions[index % len(urls)]
        async with session.get(urls[index % len(urls)] + f"/item/{index}") as response:
            await response.read()
            statuses[response.status] += 1

    try:
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(total))), 60)
    finally:
        for session in sessions:
            await session.close()
    return statuses


def start_many(start_gateway: Any, config: dict[str, Any], count: int) -> list[GatewayProcess]:
    return [start_gateway(config) for _ in range(count)]


def test_redis_sliding_window_exact_across_three_instances(upstream, start_gateway):
    config = limited_config(
        upstream.url,
        {"limit": 100, "window": "60s", "store": "redis"},
        redis={"url": REDIS_URL, "key_prefix": prefix()},
    )
    gateways = start_many(start_gateway, config, 3)
    statuses = asyncio.run(burst([g.url for g in gateways], 1000))
    assert statuses == Counter({200: 100, 429: 900})


def test_redis_token_bucket_exact_across_three_instances(upstream, start_gateway):
    config = limited_config(
        upstream.url,
        {"limit": 100, "window": "60s", "store": "redis", "algorithm": "token_bucket"},
        redis={"url": REDIS_URL, "key_prefix": prefix()},
    )
    gateways = start_many(start_gateway, config, 3)
    started = time.monotonic()
    statuses = asyncio.run(burst([g.url for g in gateways], 1000))
    elapsed = time.monotonic() - started
    assert sum(statuses.values()) == 1000 and set(statuses) <= {200, 429}
    # A bucket of 100 refills one token every 0.6 s: exactly 100 unless the burst itself
    # lasted that long, and never more than the refill allows.
    assert 100 <= statuses[200] <= 100 + math.floor(elapsed / 0.6)
    if elapsed < 0.6:
        assert statuses[200] == 100


def test_redis_exact_with_two_workers(upstream, start_gateway):
    config = limited_config(
        upstream.url,
        {"limit": 100, "window": "60s", "store": "redis"},
        redis={"url": REDIS_URL, "key_prefix": prefix()},
    )
    gateway = start_gateway(config, workers=2)
    statuses = asyncio.run(burst([gateway.url], 1000, per_gateway_connections=200))
    assert statuses == Counter({200: 100, 429: 900})


def test_memory_exact_under_concurrency(upstream, start_gateway):
    gateway = start_gateway(limited_config(upstream.url, {"limit": 100, "window": "60s"}))
    statuses = asyncio.run(burst([gateway.url], 1000, per_gateway_connections=200))
    assert statuses == Counter({200: 100, 429: 900})


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_window_rollover_and_retry_after(upstream, start_gateway, store):
    config = limited_config(
        upstream.url,
        {"limit": 2, "window": "2s", "store": store},
        redis={"url": REDIS_URL, "key_prefix": prefix()},
    )
    gateway = start_gateway(config)
    first = time.monotonic()
    assert request(gateway.port, "GET", "/a").status == 200
    second = request(gateway.port, "GET", "/a")
    assert second.status == 200
    assert second.header("RateLimit-Policy") == '"2-per-2s";q=2;w=2'
    assert second.header("RateLimit") == '"2-per-2s";r=0;t=2'
    refused = request(gateway.port, "GET", "/a")
    assert refused.status == 429
    assert refused.header("Content-Type") == "application/problem+json"
    assert refused.header("Retry-After") == "2"
    assert refused.header("RateLimit") == '"2-per-2s";r=0;t=2'
    body = refused.json()
    assert body["status"] == 429 and body["request_id"] == refused.header("X-Request-ID")
    time.sleep(max(0.0, first + 1.2 - time.monotonic()))
    still = request(gateway.port, "GET", "/a")
    assert still.status == 429 and still.header("Retry-After") == "1"
    time.sleep(max(0.0, first + 2.05 - time.monotonic()))
    assert request(gateway.port, "GET", "/a").status == 200  # the first one left the window


def test_forwarded_for_from_untrusted_peer_does_not_change_the_key(upstream, start_gateway):
    gateway = start_gateway(limited_config(upstream.url, {"limit": 2, "window": "60s"}))
    statuses = [
        request(gateway.port, "GET", "/", headers={"X-Forwarded-For": f"198.51.100.{i}"}).status
        for i in range(3)
    ]
    assert statuses == [200, 200, 429]


def test_forwarded_for_through_a_trusted_proxy_is_the_key(upstream, start_gateway):
    config = limited_config(
        upstream.url, {"limit": 1, "window": "60s"}, server={"trusted_proxies": ["127.0.0.1"]}
    )
    gateway = start_gateway(config)
    statuses = [
        request(gateway.port, "GET", "/", headers={"X-Forwarded-For": f"198.51.100.{i}"}).status
        for i in (1, 2, 1)
    ]
    assert statuses == [200, 200, 429]


def test_several_limits_and_metrics(upstream, start_gateway):
    config = limited_config(
        upstream.url,
        {
            "limits": [
                {"limit": 3, "window": "60s", "name": "minute"},
                {"limit": 10, "window": "1h", "name": "hour", "algorithm": "token_bucket"},
            ]
        },
    )
    gateway = start_gateway(config)
    responses = [request(gateway.port, "GET", "/x") for _ in range(4)]
    assert [r.status for r in responses] == [200, 200, 200, 429]
    assert responses[0].header("RateLimit-Policy") == '"minute";q=3;w=60, "hour";q=10;w=3600'
    assert responses[0].header("RateLimit").startswith('"minute";r=2;')
    metrics = request(gateway.port, "GET", "/api/v1/metrics").body.decode()
    assert (
        'rate_limit_decisions_total{policy="minute",result="allowed",route="limited"} 3.0'
        in metrics
    )
    assert (
        'rate_limit_decisions_total{policy="minute",result="limited",route="limited"} 1.0'
        in metrics
    )


def test_health_probes_and_metrics_are_never_limited(upstream, start_gateway):
    config = limited_config(upstream.url, {"limit": 1, "window": "60s"})
    config["api"] = {"policies": {"rate_limit": {"limit": 1, "window": "60s"}}}
    gateway = start_gateway(config)
    for path in ("/api/v1/health/liveness", "/api/v1/metrics"):
        assert [request(gateway.port, "GET", path).status for _ in range(3)] == [200] * 3
    # The own API's limit holds for the rest of it.
    assert [request(gateway.port, "GET", "/api/openapi.json").status for _ in range(2)] == [
        200,
        429,
    ]


def test_concurrency_limit_frees_slots_when_requests_finish(upstream, start_gateway):
    config = {
        "services": {"up": {"targets": [upstream.url]}},
        "routes": [
            {
                "name": "slow",
                "match": {"prefix": "/"},
                "service": "up",
                "policies": {"concurrency_limit": {"max": 2}},
            },
        ],
    }
    gateway = start_gateway(config)

    async def run() -> list[int]:
        async with aiohttp.ClientSession() as session:

            async def one(delay: float) -> int:
                await asyncio.sleep(delay)
                async with session.get(gateway.url + "/slow?delay=0.6") as response:
                    await response.read()
                    return response.status

            return list(await asyncio.gather(one(0), one(0), one(0.2)))

    assert asyncio.run(run()) == [200, 200, 429]
    # Both finished: their slots are free again, without any explicit release.
    assert [request(gateway.port, "GET", "/status/200").status for _ in range(3)] == [200] * 3
