"""The login guard's state machine on a real database (SQLite; the contract parts on PostgreSQL
too), with an injected clock: window, lock-out doubling, success, pruning, concurrent workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import text

from potok.identity.config import DatabaseConfig, LoginProtectionConfig
from potok.identity.database import Database
from potok.identity.login_failures import LoginFailureStore
from potok.identity.login_guard import PRUNE_INTERVAL, LoginGuard, LoginLocked
from potok.identity.schema import current_version, login_failures, migrate
from tests.support.identity_db import postgres_database


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


async def open_database(url: str) -> Database:
    database = Database(DatabaseConfig(url=url))
    await migrate(database)
    async with database.engine.begin() as conn:
        await conn.execute(text(f"DELETE FROM {login_failures.name}"))
    return database


@pytest.fixture
async def sqlite_db(tmp_path) -> AsyncIterator[Database]:
    database = await open_database(f"sqlite:///{tmp_path}/identity.db")
    yield database
    await database.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_db(request, tmp_path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/identity.db"
    else:
        url = request.getfixturevalue("postgres_url")
    database = await open_database(url)
    yield database
    await database.close()


def guard_on(database: Database, clock: Clock, **config: float) -> LoginGuard:
    return LoginGuard(LoginProtectionConfig(**config), LoginFailureStore(database), clock)


async def retry_after(guard: LoginGuard, username: str, ip: str) -> float:
    try:
        await guard.check(username, ip)
    except LoginLocked as exc:
        return exc.retry_after
    return 0.0


async def fail(guard: LoginGuard, username: str, ip: str) -> bool:
    """True: the failure was counted (answered 401); False: refused as locked (429)."""
    try:
        await guard.failed(username, ip)
    except LoginLocked:
        return False
    return True


async def test_the_migration_adds_the_table(any_db):
    assert await current_version(any_db) == 2
    assert await LoginFailureStore(any_db).count() == 0


async def test_a_username_locks_then_backs_off(any_db):
    clock = Clock()
    guard = guard_on(any_db, clock, max_failures_per_user=3, lockout=10, max_lockout=25)
    for _ in range(3):
        assert await retry_after(guard, "Alice", "1.1.1.1") == 0
        assert await fail(guard, "Alice", "1.1.1.1")
    assert await retry_after(guard, "alice", "2.2.2.2") == 10  # case-insensitive, any IP
    assert not await fail(guard, "alice", "2.2.2.2")  # locked: refused, not counted
    clock.now += 10
    assert await retry_after(guard, "alice", "2.2.2.2") == 0
    for _ in range(3):
        assert await fail(guard, "alice", "2.2.2.2")
    assert await retry_after(guard, "alice", "3.3.3.3") == 20  # doubled
    clock.now += 20
    for _ in range(3):
        assert await fail(guard, "alice", "2.2.2.2")
    assert await retry_after(guard, "alice", "3.3.3.3") == 25  # capped


async def test_the_lock_is_seen_by_another_worker(any_db):
    """Two guards over one database are two workers: failures on one lock the other."""
    clock = Clock()
    first = guard_on(any_db, clock, max_failures_per_user=4, lockout=30)
    second = guard_on(any_db, clock, max_failures_per_user=4, lockout=30)
    for guard in (first, second, first, second):
        assert await fail(guard, "bob", "9.9.9.9")
    assert await retry_after(second, "bob", "8.8.8.8") == 30
    assert await retry_after(first, "bob", "8.8.8.8") == 30


async def test_the_window_rolls_over(sqlite_db):
    clock = Clock()
    guard = guard_on(sqlite_db, clock, max_failures_per_user=3, window=60)
    assert await fail(guard, "bob", "ip")
    assert await fail(guard, "bob", "ip")
    clock.now += 60  # exactly a window later: both have left it
    assert await fail(guard, "bob", "ip")
    assert await retry_after(guard, "bob", "ip") == 0
    clock.now += 30
    assert await fail(guard, "bob", "ip")
    assert await retry_after(guard, "bob", "ip") == 0
    clock.now += 29  # the failure at +60 is still inside the window: the third locks
    assert await fail(guard, "bob", "ip")
    assert await retry_after(guard, "bob", "ip") == 60


async def test_success_clears_the_username_not_the_ip(sqlite_db):
    clock = Clock()
    guard = guard_on(sqlite_db, clock, max_failures_per_user=3, max_failures_per_ip=4, lockout=5)
    assert await fail(guard, "bob", "6.6.6.6")
    assert await fail(guard, "bob", "6.6.6.6")
    await guard.succeeded("Bob", "6.6.6.6")
    assert await fail(guard, "bob", "6.6.6.6")
    assert await fail(guard, "bob", "6.6.6.6")
    assert await retry_after(guard, "bob", "7.7.7.7") == 0  # two since the success, not four
    # ... but the IP kept all four of its failures: it is locked now.
    assert await retry_after(guard, "carol", "6.6.6.6") == 5


async def test_a_right_password_is_refused_while_locked(sqlite_db):
    clock = Clock()
    guard = guard_on(sqlite_db, clock, max_failures_per_user=2, lockout=10)
    assert await fail(guard, "dave", "ip")
    assert await fail(guard, "dave", "ip")
    with pytest.raises(LoginLocked) as locked:
        await guard.succeeded("dave", "ip")
    assert locked.value.retry_after == 10
    assert await retry_after(guard, "dave", "ip") == 10  # the lock-out was not lifted
    clock.now += 10
    await guard.succeeded("dave", "ip")
    assert await LoginFailureStore(sqlite_db).count() == 1  # the user's row went; the IP's stays


async def test_an_ip_locks_across_usernames(any_db):
    clock = Clock()
    guard = guard_on(any_db, clock, max_failures_per_ip=5, lockout=30)
    for i in range(5):
        assert await fail(guard, f"user{i}", "6.6.6.6")
    assert await retry_after(guard, "someone-new", "6.6.6.6") == 30
    assert await retry_after(guard, "someone-new", "7.7.7.7") == 0


async def test_unknown_and_real_usernames_are_tracked_alike(sqlite_db):
    """The guard never asks whether a user exists: its rows are keyed by the name typed."""
    clock = Clock()
    guard = guard_on(sqlite_db, clock, max_failures_per_user=2)
    for name in ("no-such-user", "no-such-user"):
        assert await fail(guard, name, "ip")
    assert await retry_after(guard, "no-such-user", "other") == 60


async def test_old_rows_are_pruned(sqlite_db):
    clock = Clock()
    store = LoginFailureStore(sqlite_db)
    guard = guard_on(sqlite_db, clock, max_failures_per_user=2, window=100, lockout=50)
    for i in range(50):
        assert await fail(guard, f"user{i}", f"10.0.0.{i}")
    assert await store.count() == 100
    assert await fail(guard, "mallory", "6.6.6.6")
    assert await fail(guard, "mallory", "6.6.6.6")  # locked until +50
    clock.now += 100  # every failure has left the window; mallory was locked until +50
    assert await guard.prune() == 101
    assert await store.count() == 1  # mallory's lock-out count is kept a window more
    clock.now += 50
    assert await guard.prune() == 1
    # Pruning also happens by itself, at most once per PRUNE_INTERVAL per worker, on a failure.
    assert await fail(guard, "x", "1.2.3.4")  # prunes (nothing to prune)
    clock.now += PRUNE_INTERVAL / 2
    assert await fail(guard, "y", "1.2.3.5")  # too soon to prune again
    clock.now += 100
    assert await store.count() == 4  # x's and y's rows have expired, but are still there
    assert await fail(guard, "z", "1.2.3.6")  # prunes them
    assert await store.count() == 2


async def test_the_memory_of_lockouts_is_bounded_and_spares_the_database(sqlite_db):
    clock = Clock()
    guard = guard_on(sqlite_db, clock, max_failures_per_user=1, tracked=100, lockout=60)
    for i in range(300):
        assert await fail(guard, f"user{i}", f"10.0.{i // 250}.{i % 250}")
    assert guard.remembered == 100
    await sqlite_db.close()  # a remembered lock-out is refused without the database
    assert await retry_after(guard, "user299", "any") == 60


@pytest.mark.parametrize("workers", [4])
async def test_concurrent_workers_admit_exactly_the_limit(any_db, workers):
    """Several engines (one per simulated worker, each with its own connections) record 60
    failures of one username at once: exactly `max_failures_per_user` are counted."""
    url = any_db.engine.url.render_as_string(hide_password=False)
    url = url.replace("+aiosqlite", "").replace("+asyncpg", "")
    databases = [Database(DatabaseConfig(url=url)) for _ in range(workers)]
    clock = Clock()
    guards = [
        guard_on(db, clock, max_failures_per_user=5, max_failures_per_ip=1000) for db in databases
    ]
    try:
        outcomes = await asyncio.gather(
            *(fail(guards[i % workers], "victim", f"10.1.0.{i}") for i in range(60))
        )
    finally:
        for database in databases:
            await database.close()
    assert outcomes.count(True) == 5
    assert outcomes.count(False) == 55
