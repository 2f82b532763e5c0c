"""Operator overrides are the instance's: a worker restarted after a crash and a service
rebuilt by a reload keep a drained target and a breaker held open; releasing them is
kept too. With `scope=cluster` an override reaches every instance on the event bus
(Redis, NATS), and nobody else can publish on its channel."""

from __future__ import annotations

import asyncio
import copy
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import nats
import pytest
import yaml

from tests.support.admin import AdminGateway, wait_until
from tests.support.net import request
from tests.support.realtime import publish, realtime_config
from tests.support.upstream import Upstream

SPREAD = 40  # fresh connections: SO_REUSEPORT spreads them over both workers


@pytest.fixture(scope="module")
def targets() -> Iterator[tuple[Upstream, Upstream, Upstream]]:
    servers = (Upstream(), Upstream(), Upstream())
    yield servers
    for server in servers:
        server.stop()


def _services(targets: tuple[Upstream, ...], threshold: int = 3) -> dict[str, Any]:
    breaker = {"consecutive_failures": threshold, "open_for": "30s"}
    return {
        "up": {"targets": [targets[0].url, targets[1].url], "circuit_breaker": breaker},
        "other": {"targets": [targets[2].url], "circuit_breaker": breaker},
    }


ROUTES = [
    {"name": "other", "match": {"prefix": "/other"}, "service": "other"},
    {"name": "all", "match": {"prefix": "/"}, "service": "up"},
]


def _name(upstream: Upstream) -> str:
    return f"127.0.0.1:{upstream.port}"


# One instance, two workers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(targets: tuple[Upstream, Upstream, Upstream]) -> Iterator[AdminGateway]:
    gateway = AdminGateway([], workers=2, services=_services(targets), routes=copy.deepcopy(ROUTES))
    wait_until(lambda: len(_reachable(gateway)) == 2)
    yield gateway
    gateway.stop()


def _reachable(gateway: AdminGateway) -> list[dict[str, Any]]:
    workers = gateway.admin("GET", "/workers").json()["workers"]
    return [w for w in workers if "unreachable" not in w]


def _answered_by(gateway: AdminGateway, prefix: str = "/spread") -> set[str]:
    """Which workers answered SPREAD requests on fresh connections (from the access log)."""
    marker = f"{prefix}-{time.monotonic_ns()}"
    for _ in range(SPREAD):
        request(gateway.port, "GET", marker)

    def logged() -> list[dict[str, Any]] | None:
        lines = [e for e in gateway.process.access_log() if e["path"] == marker]
        return lines if len(lines) == SPREAD else None

    return {line["worker"] for line in wait_until(logged)}


def _crash(gateway: AdminGateway, worker: str) -> None:
    """SIGKILL a worker; back when the supervisor's replacement answers the admin API."""
    victim = next(w for w in _reachable(gateway) if w["id"] == worker)
    os.kill(victim["pid"], signal.SIGKILL)
    wait_until(
        lambda: (
            [w for w in _reachable(gateway) if w["id"] == worker and w["pid"] != victim["pid"]]
            and len(_reachable(gateway)) == 2
        ),
        timeout=30,
    )


def _drained_everywhere(gateway: AdminGateway, target: str) -> dict[str, Any]:
    services = gateway.admin("GET", "/services").json()["services"]
    return next(t for t in services["up"]["targets"] if t["target"] == target)


def _held(gateway: AdminGateway) -> dict[str, Any]:
    breakers: dict[str, Any] = gateway.admin("GET", "/breakers").json()["breakers"]["other"]
    return breakers


def _reload(gateway: AdminGateway, services: dict[str, Any]) -> None:
    """The config file with these services (and the routes to them), then reloaded."""
    document = yaml.safe_load(gateway.process.config_path.read_text())
    document["services"] = services
    document["routes"] = [r for r in copy.deepcopy(ROUTES) if r["service"] in services]
    gateway.process.config_path.write_text(yaml.safe_dump(document))
    answer = gateway.admin("POST", "/reload")
    assert answer.status == 200, answer
    assert {r["result"]["result"] for r in answer.json()["workers"].values()} == {"applied"}


def test_a_restarted_worker_keeps_a_drained_target_and_a_held_breaker(gateway, targets):
    drained = _name(targets[0])
    # On the public port as an admin user: the actor is that user (its subject).
    answer = gateway.public("POST", f"/services/up/targets/{drained}/drain", **gateway.bearer())
    assert answer.status == 200, answer
    assert answer.json()["scope"] == "instance"
    assert answer.json()["override"]["actor"] not in ("", "listener")
    held = gateway.admin("POST", "/services/other/breaker", {"mode": "open"})
    assert held.status == 200, held
    _crash(gateway, "1")
    # By the admin reads: every worker, the restarted one too, holds both, and says who.
    target = _drained_everywhere(gateway, drained)
    assert target["drained"] is True and target["drained_scope"] == "instance"
    assert target["drained_by"] == answer.json()["override"]["actor"]
    assert target["drained_at"] == answer.json()["override"]["at"]
    breakers = _held(gateway)
    assert breakers["state"] == "open" and sorted(breakers["workers"]) == ["0", "1"]
    assert {w["forced"] for w in breakers["workers"].values()} == {"open"}
    assert all(w["forced_at"] is not None for w in breakers["workers"].values())
    # By traffic: both workers answer, neither sends anything to the drained target, and
    # the held breaker refuses on both.
    before = targets[0].total
    assert _answered_by(gateway) == {"0", "1"}
    assert targets[0].total == before
    other = targets[2].total
    statuses = {request(gateway.port, "GET", "/other/x").status for _ in range(SPREAD)}
    assert statuses == {503}
    assert targets[2].total == other


def test_a_reload_that_rebuilds_the_service_keeps_the_overrides(gateway, targets):
    drained = _name(targets[0])
    _reload(gateway, _services(targets, threshold=4))  # both services changed: rebuilt
    assert _drained_everywhere(gateway, drained)["drained"] is True
    assert _held(gateway)["state"] == "open"
    before = targets[0].total
    assert _answered_by(gateway) == {"0", "1"}
    assert targets[0].total == before
    assert {request(gateway.port, "GET", "/other/x").status for _ in range(10)} == {503}
    # And a worker restarted after that reload still has them.
    _crash(gateway, "0")
    assert _drained_everywhere(gateway, drained)["drained"] is True
    assert _held(gateway)["state"] == "open"


def test_releasing_clears_what_a_restarted_worker_starts_from(gateway, targets):
    drained = _name(targets[0])
    enabled = gateway.admin("POST", f"/services/up/targets/{drained}/enable")
    assert enabled.status == 200, enabled
    released = gateway.admin("POST", "/services/other/breaker", {"mode": "auto"})
    assert released.status == 200, released
    _crash(gateway, "1")
    target = _drained_everywhere(gateway, drained)
    assert target["drained"] is False and target["drained_by"] is None
    assert {w["forced"] for w in _held(gateway)["workers"].values()} == {None}
    before = targets[0].total
    assert _answered_by(gateway) == {"0", "1"}
    assert targets[0].total > before
    wait_until(lambda: request(gateway.port, "GET", "/other/x").status == 200)


def test_an_override_of_a_service_a_reload_removed_is_dropped(gateway, targets):
    held = gateway.admin("POST", "/services/other/breaker", {"mode": "open"})
    assert held.status == 200, held
    only_up = {"up": _services(targets)["up"]}
    _reload(gateway, only_up)
    assert "other" not in gateway.admin("GET", "/breakers").json()["breakers"]
    # Back in the config: a fresh service, not held (the override went with it, from
    # every worker's memory and from the file a restarted worker starts from).
    _reload(gateway, _services(targets))
    _crash(gateway, "0")
    assert {w["forced"] for w in _held(gateway)["workers"].values()} == {None}
    assert wait_until(lambda: request(gateway.port, "GET", "/other/x").status == 200)


# Two instances on one bus ------------------------------------------------------------------


class Instances:
    """Two gateways sharing a real event bus, each with its own admin database."""

    def __init__(self, backend: str, targets: tuple[Upstream, ...]) -> None:
        unique = uuid.uuid4().hex[:10]
        self.backend = backend
        self.stream = f"ADM{unique}"
        bus: dict[str, Any] = {"backend": backend, "subject_prefix": f"adm{unique}.events"}
        if backend == "nats":
            bus["nats"] = {"stream": self.stream}
        shared = realtime_config(bus=bus)
        extra: dict[str, Any] = {"realtime": shared["realtime"]}
        if backend == "redis":
            extra["redis"] = {"url": "redis://127.0.0.1:6379/0", "key_prefix": f"adm{unique}:"}
        # B with two workers: each hears the bus and keeps the override in B's file.
        self.gateways = [
            AdminGateway(
                [], workers, services=_services(targets), routes=copy.deepcopy(ROUTES), **extra
            )
            for workers in (1, 2)
        ]

    def stop(self) -> None:
        for gateway in self.gateways:
            gateway.stop()
        if self.backend == "nats":
            asyncio.run(self._delete_stream())

    async def _delete_stream(self) -> None:
        connection = await nats.connect("nats://127.0.0.1:4222")
        try:
            await connection.jetstream().delete_stream(self.stream)
        finally:
            await connection.close()


@pytest.fixture(params=["redis", "nats"], scope="module")
def instances(request: pytest.FixtureRequest, targets) -> Iterator[Instances]:
    pair = Instances(request.param, targets)
    wait_until(lambda: len(_reachable(pair.gateways[1])) == 2)
    yield pair
    pair.stop()


def test_a_cluster_drain_on_one_instance_takes_effect_on_the_other(instances, targets):
    a, b = instances.gateways
    drained = _name(targets[1])
    path = f"/services/up/targets/{drained}/drain?scope=cluster&ack_wait=2"
    answer = a.public("POST", path, **a.bearer())
    assert answer.status == 200, answer
    body = answer.json()
    assert body["scope"] == "cluster" and body["cluster"]["published"] is True
    # B acknowledged (both its workers applied it); A's own message was not applied twice.
    acks = body["cluster"]["instances"]
    assert len(acks) == 1 and body["override"]["origin"] not in acks
    assert {w: ack["ok"] for w, ack in next(iter(acks.values())).items()} == {
        "0": True,
        "1": True,
    }
    target = wait_until(lambda: _drained(b, drained))
    assert target["drained_scope"] == "cluster"
    assert target["drained_by"] == body["override"]["actor"] != "listener"
    before = targets[1].total
    assert _answered_by(b, "/cluster") == {"0", "1"}
    assert targets[1].total == before
    # B keeps it as its own: a B worker restarted after a crash holds it too.
    _crash(b, "1")
    assert _drained(b, drained) is not None
    assert _answered_by(b, "/cluster") == {"0", "1"}
    assert targets[1].total == before
    released = a.admin("POST", f"/services/up/targets/{drained}/enable?scope=cluster")
    assert released.status == 200, released
    wait_until(lambda: _drained(b, drained) is None)
    _answered_by(b, "/cluster")
    assert targets[1].total > before


def test_an_instance_scoped_drain_stays_on_its_instance(instances, targets):
    a, b = instances.gateways
    drained = _name(targets[1])
    answer = a.admin("POST", f"/services/up/targets/{drained}/drain")
    assert answer.status == 200 and "cluster" not in answer.json()
    time.sleep(0.5)
    assert _drained(a, drained) is not None and _drained(b, drained) is None
    a.admin("POST", f"/services/up/targets/{drained}/enable")


def test_a_cluster_breaker_holds_on_every_instance(instances, targets):
    a, b = instances.gateways
    unknown = a.admin("POST", "/services/nothing/breaker?scope=cluster", {"mode": "open"})
    assert unknown.status == 404  # refused here first: nothing is published
    held = a.admin("POST", "/services/other/breaker?scope=cluster&ack_wait=2", {"mode": "open"})
    assert held.status == 200, held
    acks = held.json()["cluster"]["instances"]
    assert [ack["ok"] for worker in acks.values() for ack in worker.values()] == [True, True]
    b_breakers = _held(b)
    assert b_breakers["state"] == "open"
    assert {w["forced_scope"] for w in b_breakers["workers"].values()} == {"cluster"}
    assert {request(b.port, "GET", "/other/x").status for _ in range(10)} == {503}
    assert a.admin("POST", "/services/other/breaker?scope=cluster", {"mode": "auto"}).status == 200
    wait_until(lambda: {w["forced"] for w in _held(b)["workers"].values()} == {None})


def test_nobody_publishes_on_the_admin_actions_channel(instances, targets):
    a, b = instances.gateways
    drained = _name(targets[1])
    forged = {
        "channel": "_potok.admin.actions",
        "type": "admin.override",
        "data": {
            "action": "forged",
            "instance": "elsewhere",
            "change": {"kind": "drain", "service": "up", "target": drained, "state": "drained",
                       "actor": "mallory", "at": time.time()},
        },
    }  # fmt: skip
    for gateway in (a, b):
        assert publish(gateway.port, forged).status == 422
    time.sleep(0.5)
    assert _drained(a, drained) is None and _drained(b, drained) is None


def test_cluster_scope_needs_a_shared_bus(targets):
    alone = AdminGateway([], services=_services(targets), routes=copy.deepcopy(ROUTES))
    try:
        answer = alone.admin("POST", "/services/other/breaker?scope=cluster", {"mode": "open"})
        assert answer.status == 409
        assert answer.header("content-type") == "application/problem+json"
        assert "realtime event bus" in answer.json()["detail"]
    finally:
        alone.stop()


def _drained(gateway: AdminGateway, target: str) -> dict[str, Any] | None:
    services = gateway.admin("GET", "/services").json()["services"]
    found = next(t for t in services["up"]["targets"] if t["target"] == target)
    return found if found["drained"] else None
