"""The admin API with `--workers 2`: reads add every worker up, actions reach every worker,
and a worker restarted after a crash starts from the config the admin API applied."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
import yaml

from tests.support.admin import AdminGateway, put_config, wait_until
from tests.support.net import request
from tests.support.upstream import Upstream

# Fresh connections: SO_REUSEPORT spreads them over both workers.
SPREAD = 40


@pytest.fixture(scope="module")
def targets() -> Iterator[tuple[Upstream, Upstream]]:
    servers = (Upstream(), Upstream())
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def gateway(targets: tuple[Upstream, Upstream]) -> Iterator[AdminGateway]:
    gateway = AdminGateway([targets[0].url, targets[1].url], workers=2)
    wait_until(lambda: len(_reachable(gateway)) == 2)
    yield gateway
    gateway.stop()


def _reachable(gateway: AdminGateway) -> list[dict]:
    workers = gateway.admin("GET", "/workers").json()["workers"]
    return [w for w in workers if "unreachable" not in w]


def _answered_by(gateway: AdminGateway) -> set[str]:
    """Which workers answered SPREAD requests on fresh connections (from the access log)."""
    marker = f"/spread-{time.monotonic_ns()}"
    for _ in range(SPREAD):
        request(gateway.port, "GET", marker)
    lines = wait_until(
        lambda: (
            [e for e in gateway.process.access_log() if e["path"] == marker]
            if len([e for e in gateway.process.access_log() if e["path"] == marker]) == SPREAD
            else None
        )
    )
    return {line["worker"] for line in lines}


def test_every_worker_is_listed_with_its_own_process(gateway):
    workers = _reachable(gateway)
    assert sorted(w["id"] for w in workers) == ["0", "1"]
    pids = {w["pid"] for w in workers}
    assert len(pids) == 2 and gateway.process.process.pid not in pids
    assert gateway.admin("GET", "/workers").json()["expected"] == 2


def test_traffic_adds_every_worker_up(gateway):
    before = gateway.admin("GET", "/traffic").json()["routes"].get("all", {"requests": 0})
    assert _answered_by(gateway) == {"0", "1"}  # both workers served some
    after = gateway.admin("GET", "/traffic").json()["routes"]["all"]
    assert after["requests"] - before["requests"] == SPREAD


def test_a_forced_breaker_holds_on_every_worker(gateway, targets):
    answer = gateway.admin("POST", "/services/up/breaker", {"mode": "open"})
    assert answer.status == 200
    results = answer.json()["workers"]
    assert sorted(results) == ["0", "1"]
    assert all(r["ok"] and r["result"]["breaker"]["forced"] == "open" for r in results.values())
    breakers = gateway.admin("GET", "/breakers").json()["breakers"]["up"]
    assert breakers["state"] == "open" and sorted(breakers["workers"]) == ["0", "1"]
    before = targets[0].total + targets[1].total
    statuses = {request(gateway.port, "GET", "/held").status for _ in range(SPREAD)}
    assert statuses == {503}
    assert targets[0].total + targets[1].total == before
    gateway.admin("POST", "/services/up/breaker", {"mode": "auto"})
    wait_until(lambda: request(gateway.port, "GET", "/released").status == 200)


def test_a_drained_target_gets_nothing_from_any_worker(gateway, targets):
    gateway.admin("POST", "/services/up/breaker", {"mode": "closed"})  # probes must not fail
    first = targets[0]
    name = f"127.0.0.1:{first.port}"
    answer = gateway.admin("POST", f"/services/up/targets/{name}/drain")
    assert all(r["ok"] for r in answer.json()["workers"].values())
    before = first.total
    assert _answered_by(gateway) == {"0", "1"}
    assert first.total == before
    services = gateway.admin("GET", "/services").json()["services"]["up"]
    drained = next(t for t in services["targets"] if t["target"] == name)
    assert drained["drained"] is True
    gateway.admin("POST", f"/services/up/targets/{name}/enable")
    gateway.admin("POST", "/services/up/breaker", {"mode": "auto"})
    _answered_by(gateway)
    assert first.total > before


def test_a_rotated_key_is_refused_by_every_worker_at_once(gateway):
    created = gateway.admin("POST", "/keys", {"name": "fleet"}).json()
    old = created["key"]
    ok = {request(gateway.port, "GET", "/keyed/a", {"X-API-Key": old}).status for _ in range(20)}
    assert ok == {200}
    gateway.admin("POST", f"/keys/{created['id']}/rotate", {"overlap": 0})
    refused = {
        request(gateway.port, "GET", "/keyed/a", {"X-API-Key": old}).status for _ in range(20)
    }
    assert refused == {401}


def test_an_applied_config_reaches_every_worker_and_survives_a_worker_crash(gateway):
    document = yaml.safe_load(gateway.process.config_path.read_text())
    document["routes"].insert(0, {"name": "fresh", "match": {"prefix": "/fresh"}, "service": "up"})
    answer = put_config(gateway.listen_port, yaml.safe_dump(document))
    assert answer.status == 200, answer
    results = answer.json()["workers"]
    assert {w: r["result"]["result"] for w, r in results.items()} == {
        "0": "applied",
        "1": "applied",
    }
    digests = {w["config_digest"] for w in _reachable(gateway)}
    assert len(digests) == 1
    reloads = gateway.admin("GET", "/reloads").json()["reloads"]
    assert {r["worker"] for r in reloads if r["trigger"] == "admin: config applied"} == {"0", "1"}
    # A worker that dies is restarted from the config the admin API applied.
    victim = next(w for w in _reachable(gateway) if w["id"] == "1")
    os.kill(victim["pid"], signal.SIGKILL)
    restarted = wait_until(
        lambda: [w for w in _reachable(gateway) if w["id"] == "1" and w["pid"] != victim["pid"]]
    )
    assert restarted[0]["config_digest"] == digests.pop()


def test_an_unreachable_worker_is_reported_not_fatal(gateway):
    victim = next(w for w in _reachable(gateway) if w["id"] == "1")
    os.kill(victim["pid"], signal.SIGSTOP)  # alive but not answering: a hung worker
    try:
        started = time.monotonic()
        workers = gateway.admin("GET", "/workers").json()["workers"]
        assert time.monotonic() - started < 30
        hung = next(w for w in workers if w["id"] == "1")
        assert "unreachable" in hung
    finally:
        os.kill(victim["pid"], signal.SIGCONT)


def test_refused_keys_add_up_over_workers(gateway):
    statuses = [request(gateway.port, "GET", "/limited/x").status for _ in range(SPREAD)]
    refused = statuses.count(429)
    assert refused >= SPREAD - 1  # one per minute (the Redis store: shared by both workers)
    limits = gateway.admin("GET", "/rate-limits").json()["rate_limits"]
    limited = next(limit for limit in limits if limit["routes"] == ["limited"])
    assert limited["store"] == "redis"
    assert limited["refused_total"] == refused
    assert limited["top_keys"][0] == {"key": "ip:127.0.0.1", "refused": refused, "overcount": 0}
