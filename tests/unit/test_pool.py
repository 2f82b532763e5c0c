"""ConnectionPool: LIFO reuse, the idle cap, idle expiry and discard (pure logic, no sockets)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from potok.upstream import pool as pool_module
from potok.upstream.pool import ConnectionPool


class FakeConnection:
    """The part of UpstreamConnection the pool touches."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False
        self.idle_since = 0.0
        self.released = 0

    def release(self) -> None:
        self.released += 1

    def close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return f"Conn({self.name})"


@pytest.fixture
def clock(monkeypatch):
    """A hand-driven monotonic clock for the pool module only."""
    now = SimpleNamespace(value=1000.0)
    monkeypatch.setattr(pool_module, "time", SimpleNamespace(monotonic=lambda: now.value))
    return now


def filled(
    *names: str, max_idle: int = 10, idle_timeout: float = 60.0
) -> tuple[ConnectionPool, list]:
    pool = ConnectionPool(max_idle, idle_timeout)
    connections = [FakeConnection(n) for n in names]
    for connection in connections:
        pool.release(connection)
    return pool, connections


def drain(pool: ConnectionPool) -> list:
    out = []
    while (connection := pool.acquire()) is not None:
        out.append(connection)
    return out


def test_empty_pool_gives_none():
    assert ConnectionPool(4, 60.0).acquire() is None


def test_release_calls_release_and_stamps_idle_since(clock):
    pool, [a] = filled("a")
    assert a.released == 1
    assert a.idle_since == 1000.0
    assert len(pool) == 1


def test_lifo_reuse(clock):
    pool, [a, b, c] = filled("a", "b", "c")
    assert drain(pool) == [c, b, a]
    assert len(pool) == 0


def test_a_reused_connection_goes_back_on_top(clock):
    pool, [_, b] = filled("a", "b")
    got = pool.acquire()
    assert got is b
    pool.release(got)
    assert pool.acquire() is b


@pytest.mark.parametrize(("max_idle", "kept"), [(0, 0), (1, 1), (2, 2), (3, 3), (5, 3)])
def test_max_idle_closes_the_extras(clock, max_idle, kept):
    pool, connections = filled("a", "b", "c", max_idle=max_idle)
    assert len(pool) == kept
    assert [c.closed for c in connections] == [False] * kept + [True] * (3 - kept)
    assert drain(pool) == connections[:kept][::-1]


def test_a_closed_connection_is_not_pooled(clock):
    pool = ConnectionPool(4, 60.0)
    connection = FakeConnection("a")
    connection.closed = True
    pool.release(connection)
    assert len(pool) == 0


def test_acquire_skips_connections_that_closed_while_idle(clock):
    pool, [a, b, c] = filled("a", "b", "c")
    c.closed = True
    b.closed = True
    assert pool.acquire() is a
    assert pool.acquire() is None


@pytest.mark.parametrize(
    ("idle_for", "reused"), [(0.0, True), (59.9, True), (60.0, True), (60.1, False), (600.0, False)]
)
def test_acquire_expires_idle_connections(clock, idle_for, reused):
    pool, [a] = filled("a", idle_timeout=60.0)
    clock.value += idle_for
    assert (pool.acquire() is a) is reused
    assert a.closed is not reused
    assert len(pool) == 0


def test_acquire_closes_every_expired_connection_on_its_way(clock):
    pool = ConnectionPool(10, 60.0)
    old = [FakeConnection("old1"), FakeConnection("old2")]
    for connection in old:
        pool.release(connection)
    clock.value += 30
    fresh = FakeConnection("fresh")
    pool.release(fresh)
    clock.value += 40  # old ones idle 70s, fresh one 40s
    assert pool.acquire() is fresh
    assert pool.acquire() is None
    assert all(c.closed for c in old)


def test_prune_closes_only_the_expired_oldest(clock):
    pool = ConnectionPool(10, 60.0)
    connections = []
    for name in ("a", "b", "c", "d"):
        connection = FakeConnection(name)
        pool.release(connection)
        connections.append(connection)
        clock.value += 10  # a released at 1000, b 1010, c 1020, d 1030
    clock.value = 1000 + 75  # a and b idle more than 60s
    pool.prune()
    assert [c.closed for c in connections] == [True, True, False, False]
    assert len(pool) == 2
    assert drain(pool) == connections[:1:-1]


def test_prune_on_a_fresh_pool_does_nothing(clock):
    pool, connections = filled("a", "b")
    pool.prune()
    assert len(pool) == 2
    assert not any(c.closed for c in connections)


def test_discard_forgets_a_connection(clock):
    pool, [a, b, c] = filled("a", "b", "c")
    pool.discard(b)
    assert len(pool) == 2
    assert not b.closed  # the pool forgets it; closing is the caller's business
    assert drain(pool) == [c, a]


def test_discard_of_an_unknown_connection_is_harmless(clock):
    pool, [a] = filled("a")
    pool.discard(FakeConnection("stranger"))
    assert drain(pool) == [a]


def test_close_all(clock):
    pool, connections = filled("a", "b", "c")
    pool.close_all()
    assert len(pool) == 0
    assert all(c.closed for c in connections)
    assert pool.acquire() is None


def test_a_slot_freed_by_acquire_can_be_refilled(clock):
    pool, [_, b] = filled("a", "b", max_idle=2)
    assert pool.acquire() is b
    extra = FakeConnection("extra")
    pool.release(extra)
    assert not extra.closed
    assert len(pool) == 2
