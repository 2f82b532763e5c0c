"""Choosing a target: round robin, smooth weighted, least requests."""

from __future__ import annotations

from collections import Counter

import pytest

from potok.upstream.balancer import LeastRequests, RoundRobin, SmoothWeighted, make_balancer
from potok.upstream.pool import ConnectionPool
from potok.upstream.target import Target


def targets(*weights: int) -> list[Target]:
    """Targets named a, b, c ... with the given weights."""
    return [
        Target(f"http://{chr(ord('a') + i)}:80", weight, ConnectionPool(1, 1.0))
        for i, weight in enumerate(weights)
    ]


def picks(balancer, count: int) -> str:
    return "".join(balancer.choose().host for _ in range(count))


@pytest.mark.parametrize(("count", "expected"), [(2, "ababab"), (3, "abcabcabc"), (4, "abcdabcd")])
def test_round_robin_cycles_in_order(count, expected):
    assert picks(RoundRobin(targets(*[1] * count)), len(expected)) == expected


def test_round_robin_ignores_weights():
    assert picks(RoundRobin(targets(5, 1)), 4) == "abab"


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ((5, 1, 1), "aabacaa"),  # nginx's documented sequence
        ((1, 1, 1), "abc"),
        ((2, 1), "aba"),
        ((1, 2), "bab"),
        ((3, 2), "ababa"),
    ],
)
def test_smooth_weighted_sequence(weights, expected):
    balancer = SmoothWeighted(targets(*weights))
    # one full cycle, then the same again: the state returns to zero after sum(weights) picks
    assert picks(balancer, 2 * len(expected)) == expected * 2


@pytest.mark.parametrize("weights", [(5, 1, 1), (3, 7), (1, 2, 3, 4), (100, 1), (1, 1)])
def test_smooth_weighted_exact_proportions(weights):
    balancer = SmoothWeighted(targets(*weights))
    cycles = 50
    counts = Counter(balancer.choose().host for _ in range(cycles * sum(weights)))
    assert counts == {chr(ord("a") + i): cycles * w for i, w in enumerate(weights)}


def test_smooth_weighted_interleaves_the_light_targets():
    sequence = picks(SmoothWeighted(targets(5, 1, 1)), 70)
    assert "bb" not in sequence
    assert "cc" not in sequence


def test_least_requests_picks_the_fewest_in_flight():
    a, b, c = pool = targets(1, 1, 1)
    balancer = LeastRequests(pool)
    a.inflight, b.inflight, c.inflight = 3, 1, 2
    assert [balancer.choose() for _ in range(5)] == [b] * 5
    b.inflight = 9
    assert balancer.choose() is c
    c.inflight = 9
    assert balancer.choose() is a


def test_least_requests_rotates_ties():
    pool = targets(1, 1, 1)
    balancer = LeastRequests(pool)
    first_round = [balancer.choose() for _ in range(3)]
    assert sorted(t.host for t in first_round) == ["a", "b", "c"]
    assert [balancer.choose() for _ in range(3)] == first_round


def test_least_requests_shares_evenly_among_the_tied_minimum():
    # b is busy (a slow request): a and c are equal and must share the load evenly,
    # not the target after the busy one getting its turns too.
    pool = targets(1, 1, 1)
    balancer = LeastRequests(pool)
    pool[1].inflight = 5
    assert Counter(balancer.choose().host for _ in range(30)) == {"a": 15, "c": 15}


def test_least_requests_follows_inflight_as_requests_start_and_end():
    pool = targets(1, 1, 1)
    balancer = LeastRequests(pool)
    for _ in range(30):  # requests that never finish spread evenly
        balancer.choose().inflight += 1
    assert [t.inflight for t in pool] == [10, 10, 10]


@pytest.mark.parametrize("kind", ["round_robin", "least_requests", "weighted", "unknown"])
def test_a_single_target_is_always_chosen(kind):
    [only] = targets(3)
    balancer = make_balancer(kind, [only])
    assert all(balancer.choose() is only for _ in range(5))


@pytest.mark.parametrize(
    ("kind", "cls"),
    [("round_robin", RoundRobin), ("least_requests", LeastRequests), ("weighted", SmoothWeighted)],
)
def test_make_balancer_kinds(kind, cls):
    assert isinstance(make_balancer(kind, targets(1, 1)), cls)
