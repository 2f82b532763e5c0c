"""Weighted and canary routes through real gateways and two real upstream services."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from typing import Any

import aiohttp

from tests.support.net import request
from tests.support.realtime import AUDIENCE, ISSUER, SECRET, token

ISSUER_CONFIG = {
    "issuer": ISSUER,
    "audiences": [AUDIENCE],
    "keys": [{"algorithm": "HS256", "secret": SECRET}],
}


def split_config(v1: str, v2: str, **route: Any) -> dict[str, Any]:
    return {
        "services": {"orders-v1": {"targets": [v1]}, "orders-v2": {"targets": [v2]}},
        "routes": [
            {
                "name": "orders",
                "match": {"prefix": "/"},
                "services": [
                    {"name": "orders-v1", "weight": 90},
                    {"name": "orders-v2", "weight": 10},
                ],
                **route,
            }
        ],
    }


async def _get_all(port: int, count: int, headers_of=lambda n: {}) -> list[int]:
    statuses: list[int] = []
    connector = aiohttp.TCPConnector(limit=50)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(n: int) -> None:
            async with session.get(f"http://127.0.0.1:{port}/x/{n}", headers=headers_of(n)) as r:
                await r.read()
                statuses.append(r.status)

        for start in range(0, count, 500):
            await asyncio.gather(*(one(n) for n in range(start, min(start + 500, count))))
    return statuses


def test_ten_thousand_requests_split_ninety_ten_within_five_standard_deviations(
    pair, start_gateway
):
    v1, v2 = pair
    gateway = start_gateway(split_config(v1.url, v2.url))
    statuses = asyncio.run(_get_all(gateway.port, 10_000))
    assert statuses == [200] * 10_000
    # Binomial(10,000, 0.1): mean 1,000, sd 30. 5 sd either way: 850..1,150.
    assert v1.total + v2.total == 10_000
    assert abs(v2.total - 1_000) <= 5 * math.sqrt(10_000 * 0.1 * 0.9), (v1.total, v2.total)
    metrics = request(gateway.port, "GET", "/api/v1/metrics").body.decode()
    assert (
        f'route_variant_requests_total{{route="orders",variant="orders-v2"}} {v2.total}.0'
        in metrics
    )
    assert (
        f'route_variant_requests_total{{route="orders",variant="orders-v1"}} {v1.total}.0'
        in metrics
    )


def test_a_header_rule_beats_the_weights_and_the_access_log_names_the_variant(pair, start_gateway):
    v1, v2 = pair
    gateway = start_gateway(
        split_config(
            v1.url,
            v2.url,
            canary=[{"header": "X-Canary", "values": ["always"], "service": "orders-v2"}],
        )
    )
    for n in range(50):
        response = request(gateway.port, "GET", f"/c/{n}", headers={"X-Canary": "always"})
        assert response.status == 200
    assert v2.total == 50 and v1.total == 0
    gateway.wait_for(lambda: len(gateway.access_log()) >= 50)
    assert {line["service"] for line in gateway.access_log()} == {"orders-v2"}


def test_a_claim_rule_sends_a_beta_org_to_the_canary(pair, start_gateway):
    v1, v2 = pair
    config = split_config(
        v1.url,
        v2.url,
        canary=[{"claim": "org", "values": ["beta-org"], "service": "orders-v2"}],
        policies={"auth_jwt": {"issuers": [ISSUER_CONFIG]}},
    )
    config["routes"][0]["services"] = [
        {"name": "orders-v1", "weight": 1},
        {"name": "orders-v2", "weight": 0},
    ]
    gateway = start_gateway(config)
    beta = token(sub="b", org="beta-org")
    other = token(sub="o", org="acme")
    for _ in range(20):
        assert (
            request(gateway.port, "GET", "/b", headers={"Authorization": f"Bearer {beta}"}).status
            == 200
        )
        assert (
            request(gateway.port, "GET", "/o", headers={"Authorization": f"Bearer {other}"}).status
            == 200
        )
    assert v2.hits["/b"] == 20 and v1.hits["/o"] == 20
    assert v1.hits["/b"] == 0 and v2.hits["/o"] == 0


def test_sticky_by_user_holds_across_two_gateway_instances(pair, start_gateway):
    v1, v2 = pair
    config = split_config(
        v1.url, v2.url, sticky="user", policies={"auth_jwt": {"issuers": [ISSUER_CONFIG]}}
    )
    config["routes"][0]["services"] = [
        {"name": "orders-v1", "weight": 50},
        {"name": "orders-v2", "weight": 50},
    ]
    first, second = start_gateway(config), start_gateway(config)
    users = [f"user-{n}" for n in range(100)]
    tokens = {user: token(sub=user) for user in users}
    for user in users:
        for gateway in (first, second, first, second):
            response = request(
                gateway.port,
                "GET",
                f"/u/{user}",
                headers={"Authorization": f"Bearer {tokens[user]}"},
            )
            assert response.status == 200
    # Every user's four requests, over both instances, reached one variant only.
    for user in users:
        path = f"/u/{user}"
        assert sorted((v1.hits[path], v2.hits[path])) == [0, 4], (
            user,
            v1.hits[path],
            v2.hits[path],
        )
    on_v2 = sum(1 for user in users if v2.hits[f"/u/{user}"])
    # Binomial(100, 0.5): sd 5; 5 sd: 25..75 users on each.
    assert 25 <= on_v2 <= 75
    counts = Counter(v1.hits[f"/u/{u}"] > 0 for u in users)
    assert counts[True] + counts[False] == 100
