"""Weighted and canary routes: the variant chooser and the config rules."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
from pydantic import ValidationError

from potok.config.models import RouteConfig
from potok.exchange import Exchange
from potok.identity.principal import Principal
from potok.traffic.config import CanaryRule
from potok.traffic.split import Variant, VariantStage, compile_rule


class _Stage:
    def bind(self, pipeline: Any) -> None:
        pass

    def __call__(self, exchange: Exchange) -> None:
        pass


def stage(weights: dict[str, int], rules=(), sticky="none") -> VariantStage:
    variants = {name: Variant(name, weight, _Stage()) for name, weight in weights.items()}  # type: ignore[arg-type]
    compiled = [(compile_rule(CanaryRule(**rule)), variants[rule["service"]]) for rule in rules]
    return VariantStage("orders", list(variants.values()), compiled, sticky)


class _Connection:
    peer_ip = "10.0.0.1"


def exchange(headers=(), identity: Principal | None = None, ip: str = "10.0.0.1") -> Exchange:
    ex = Exchange(_Connection(), 0.0)  # type: ignore[arg-type]
    ex.headers = [(k.encode(), v.encode()) for k, v in headers]
    ex.identity = identity
    ex.client_ip = ip
    return ex


def within(count: int, n: int, p: float, sd: float = 5.0) -> bool:
    """`count` successes of `n` draws at `p`: inside mean ± sd standard deviations."""
    return abs(count - n * p) <= sd * math.sqrt(n * p * (1 - p))


def test_ten_thousand_requests_split_by_weight_within_five_standard_deviations():
    # Binomial(10,000, 0.1): mean 1,000, sd 30; a fair split leaves 5 sd 1 time in 1.7 M.
    chooser = stage({"v1": 90, "v2": 10})
    counts = Counter(chooser.choose(exchange()).name for _ in range(10_000))
    assert within(counts["v2"], 10_000, 0.1), counts


def test_three_way_weights_and_a_zero_weight_variant_gets_nothing_by_weight():
    chooser = stage({"a": 50, "b": 30, "c": 20, "off": 0})
    counts = Counter(chooser.choose(exchange()).name for _ in range(10_000))
    assert counts["off"] == 0
    for name, p in (("a", 0.5), ("b", 0.3), ("c", 0.2)):
        assert within(counts[name], 10_000, p), counts


def test_a_rule_beats_the_weights():
    chooser = stage(
        {"v1": 100, "v2": 0},
        rules=[{"header": "X-Canary", "values": ["1"], "service": "v2"}],
    )
    assert chooser.choose(exchange([("x-canary", "1")])).name == "v2"
    assert chooser.choose(exchange([("x-canary", "0")])).name == "v1"
    assert chooser.choose(exchange()).name == "v1"


def test_cookie_and_claim_rules():
    chooser = stage(
        {"v1": 1, "v2": 0, "v3": 0},
        rules=[
            {"cookie": "canary", "values": ["yes"], "service": "v2"},
            {"claim": "org", "values": ["beta-org"], "service": "v3"},
        ],
    )
    assert chooser.choose(exchange([("Cookie", "a=1; canary=yes; b=2")])).name == "v2"
    assert chooser.choose(exchange([("Cookie", "canary=no")])).name == "v1"
    beta = Principal(subject="u1", kind="user", org="beta-org")
    other = Principal(subject="u2", kind="user", org="acme")
    assert chooser.choose(exchange(identity=beta)).name == "v3"
    assert chooser.choose(exchange(identity=other)).name == "v1"
    roles = stage(
        {"v1": 1, "v2": 0}, rules=[{"claim": "role", "values": ["tester"], "service": "v2"}]
    )
    tester = Principal(subject="u3", kind="user", roles=frozenset({"reader", "tester"}))
    assert roles.choose(exchange(identity=tester)).name == "v2"


def test_sticky_by_user_keeps_a_user_on_one_variant_and_splits_users_by_weight():
    chooser = stage({"v1": 70, "v2": 30}, sticky="user")
    picks = {}
    for n in range(2_000):
        user = Principal(subject=f"user-{n}", kind="user")
        first = chooser.choose(exchange(identity=user)).name
        assert all(chooser.choose(exchange(identity=user)).name == first for _ in range(3))
        picks[n] = first
    assert within(sum(1 for v in picks.values() if v == "v2"), 2_000, 0.3)
    # Another chooser (another instance, another process) agrees: CRC-32, not hash().
    again = stage({"v1": 70, "v2": 30}, sticky="user")
    assert all(
        again.choose(exchange(identity=Principal(subject=f"user-{n}", kind="user"))).name == v
        for n, v in picks.items()
    )


def test_sticky_by_client_ip():
    chooser = stage({"v1": 50, "v2": 50}, sticky="client_ip")
    for n in range(200):
        ip = f"10.0.{n // 256}.{n % 256}"
        first = chooser.choose(exchange(ip=ip)).name
        assert chooser.choose(exchange(ip=ip)).name == first


def route(**fields: Any) -> dict[str, Any]:
    return {"match": {"prefix": "/"}, **fields}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "give `service` (or `services` for a weighted route)"),
        (
            {"service": "a", "services": [{"name": "b"}]},
            "give `service`, or `services` for a weighted route (not both)",
        ),
        ({"services": [{"name": "a"}, {"name": "a"}]}, "a service is listed twice"),
        ({"services": [{"name": "a", "weight": 0}]}, "at least one weight must be above 0"),
        (
            {
                "services": [{"name": "a"}],
                "canary": [{"header": "x", "values": ["1"], "service": "b"}],
            },
            "canary[0].service: 'b' is not one of the route's services (a)",
        ),
        ({"service": "a", "sticky": "user"}, "canary and sticky need a weighted route"),
        (
            {
                "services": [{"name": "a"}],
                "canary": [{"header": "x", "cookie": "y", "values": ["1"], "service": "a"}],
            },
            "give exactly one of header, cookie or claim",
        ),
    ],
)
def test_bad_variant_configs_are_named(fields, message):
    with pytest.raises(ValidationError) as caught:
        RouteConfig.model_validate(route(**fields))
    assert message in str(caught.value)
