"""Reload logic without a process: what carries over, what needs a restart, retired pools."""

from __future__ import annotations

from typing import Any

from potok.config.models import GatewayConfig
from potok.process.reload import restart_only_changes
from potok.runtime import Runtime
from potok.upstream.pool import ConnectionPool


def make(services: dict[str, Any], **extra: Any) -> GatewayConfig:
    routes = [{"match": {"prefix": f"/{name}"}, "service": name} for name in services]
    return GatewayConfig.model_validate({"services": services, "routes": routes, **extra})


def test_unchanged_services_are_carried_over_and_changed_ones_rebuilt() -> None:
    old = Runtime(
        make({"a": {"targets": ["http://127.0.0.1:1"]}, "b": {"targets": ["http://127.0.0.1:2"]}})
    )
    new = Runtime(
        make({"a": {"targets": ["http://127.0.0.1:1"]}, "b": {"targets": ["http://127.0.0.1:3"]}}),
        previous=old,
    )
    assert new.services["a"] is old.services["a"]
    assert new.services["b"] is not old.services["b"]
    assert new.digest != old.digest
    old.retire(new)
    assert old.services["b"].targets[0].pool.max_idle == 0  # retired
    assert new.services["a"].targets[0].pool.max_idle > 0  # carried over, untouched


def test_restart_only_changes_are_named() -> None:
    base = make({"a": {"targets": ["http://127.0.0.1:1"]}})
    moved = make({"a": {"targets": ["http://127.0.0.1:1"]}}, server={"port": 9999})
    logged = make({"a": {"targets": ["http://127.0.0.1:1"]}}, logging={"level": "debug"})
    routed = make({"a": {"targets": ["http://127.0.0.1:2"]}})
    assert restart_only_changes(base, moved) == ["server.port"]
    assert restart_only_changes(base, logged) == ["logging"]
    assert restart_only_changes(base, routed) == []  # services and routes reload


class FakeConnection:
    """Stands in for UpstreamConnection: the pool only calls these."""

    def __init__(self) -> None:
        self.closed = False
        self.idle_since = 0.0

    def release(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_a_retired_pool_closes_idle_connections_and_those_released_later() -> None:
    pool = ConnectionPool(max_idle=4, idle_timeout=60)
    idle, busy = FakeConnection(), FakeConnection()
    pool.release(idle)  # type: ignore[arg-type]
    pool.retire()
    assert idle.closed and len(pool) == 0
    pool.release(busy)  # type: ignore[arg-type]  # a request in flight at the reload ends
    assert busy.closed and len(pool) == 0
