"""Both outbox backends (a SQLite file; a fresh PostgreSQL database): a delivery is a
replay when its replay key OR its signature key is already stored for its source — in
one group-commit batch as well as across batches — and a table made by the previous
schema (no signature_key column) is upgraded in place, its old rows kept and both
checks working afterwards."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from potok.webhooks.config import OutboxConfig
from potok.webhooks.outbox import Outbox, open_outbox
from potok.webhooks.outbox.base import DELIVERED, NewDelivery, Outcome
from potok.webhooks.outbox.postgres import INSERT
from tests.support.identity_db import postgres_database

# The table as Potok created it before signature keys (copied from that version).
OLD_TABLE = """CREATE TABLE potok_webhook_deliveries (
    seq {serial} PRIMARY KEY{autoincrement},
    id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    replay_key TEXT NOT NULL,
    event_type TEXT NOT NULL,
    received_at {real} NOT NULL,
    headers TEXT NOT NULL,
    body {blob} NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at {real} NOT NULL,
    lease_owner TEXT,
    lease_until {real},
    last_error TEXT,
    delivered_at {real},
    UNIQUE (source, replay_key)
)"""
OLD_SQLITE = OLD_TABLE.format(
    serial="INTEGER", autoincrement=" AUTOINCREMENT", real="REAL", blob="BLOB"
)
OLD_POSTGRES = OLD_TABLE.format(
    serial="BIGSERIAL", autoincrement="", real="DOUBLE PRECISION", blob="BYTEA"
)
OLD_INSERT = (
    "INSERT INTO potok_webhook_deliveries (id, source, replay_key, event_type, received_at, "
    "headers, body, state, next_at) VALUES ({marks})"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def outbox_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'outbox.db'}"
        return
    with postgres_database() as url:
        yield url


@pytest.fixture
async def outbox(outbox_url: str) -> AsyncIterator[Outbox]:
    store = open_outbox(OutboxConfig(url=outbox_url))
    await store.start()
    yield store
    await store.close()


def delivery(n: int, key: str, signature: str | None, source: str = "s") -> NewDelivery:
    return NewDelivery(
        id=f"wh_{source}_{n}",
        source=source,
        replay_key=key,
        event_type="webhook",
        received_at=time.time(),
        headers=(),
        body=b'{"n": %d}' % n,
        signature_key=signature,
    )


async def test_a_matching_id_or_signature_is_a_replay(outbox: Outbox) -> None:
    assert await outbox.accept(delivery(1, "evt_1", "sig:a"))
    assert not await outbox.accept(delivery(2, "evt_1", "sig:b"))  # same id, re-signed
    assert not await outbox.accept(delivery(3, "evt_2", "sig:a"))  # captured, fresh id
    assert await outbox.accept(delivery(4, "evt_3", "sig:c"))  # a new one
    assert await outbox.accept(delivery(5, "evt_1", "sig:a", source="t"))  # its own source
    assert await outbox.accept(delivery(6, "evt_4", None))  # no signature key: the id only
    assert await outbox.accept(delivery(7, "evt_5", None))
    assert [await outbox.get(f"wh_s_{n}") is not None for n in (1, 2, 3, 4, 6, 7)] == [
        True, False, False, True, True, True,
    ]  # fmt: skip


async def test_replays_inside_one_batch_are_told_apart(outbox: Outbox) -> None:
    # Queued together, these go into one transaction (SQLite) or one multi-row insert
    # (PostgreSQL): exactly one of each group that shares a key is stored.
    results = await asyncio.gather(
        outbox.accept(delivery(1, "evt_1", "sig:a")),
        outbox.accept(delivery(2, "evt_1", "sig:b")),
        outbox.accept(delivery(3, "evt_2", "sig:a")),
        outbox.accept(delivery(4, "evt_9", "sig:z")),
    )
    assert results[0] and results[3]
    assert results[1:3] == [False, False]
    assert await outbox.get("wh_s_2") is None and await outbox.get("wh_s_3") is None


async def test_purged_rows_free_both_keys(outbox: Outbox) -> None:
    assert await outbox.accept(delivery(1, "evt_1", "sig:a"))
    now = time.time()
    claimed = await outbox.claim("a", now, 10, 30.0, ())
    await outbox.settle("a", [Outcome(claimed[0].id, DELIVERED)], now)
    assert await outbox.purge(DELIVERED, now + 1) == 1  # past the retention
    assert await outbox.accept(delivery(2, "evt_1", "sig:b"))
    assert await outbox.accept(delivery(3, "evt_2", "sig:a"))


async def _old_postgres_table(url: str, rows: list[tuple[object, ...]]) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(OLD_POSTGRES)
        marks = ",".join(f"${n}" for n in range(1, 10))
        await connection.executemany(OLD_INSERT.format(marks=marks), rows)
    finally:
        await connection.close()


def _old_sqlite_table(url: str, rows: list[tuple[object, ...]]) -> None:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
        connection.execute(OLD_SQLITE)
        connection.executemany(OLD_INSERT.format(marks=",".join("?" * 9)), rows)


async def test_an_old_table_is_upgraded_and_both_checks_work(outbox_url: str) -> None:
    now = time.time()
    rows: list[tuple[object, ...]] = [
        (f"wh_old_{n}", "s", f"old_{n}", "webhook", now, "[]", b"{}", "pending", now)
        for n in range(3)
    ]
    if outbox_url.startswith("sqlite"):
        _old_sqlite_table(outbox_url, rows)
    else:
        await _old_postgres_table(outbox_url, rows)
    for _ in range(2):  # the upgrade is idempotent: a second start finds it done
        store = open_outbox(OutboxConfig(url=outbox_url))
        await store.start()
        await store.close()
    store = open_outbox(OutboxConfig(url=outbox_url))
    await store.start()
    try:
        assert len(await store.recent(None, "s", 10)) == 3  # old rows kept
        assert not await store.accept(delivery(1, "old_1", "sig:new"))  # old rows' ids hold
        assert await store.accept(delivery(2, "evt_1", "sig:a"))
        assert not await store.accept(delivery(3, "evt_1", "sig:b"))
        assert not await store.accept(delivery(4, "evt_2", "sig:a"))
        assert await store.accept(delivery(5, "evt_3", "sig:c"))
        assert [d.id for d in await store.recent(None, "s", 10)][:2] == ["wh_s_5", "wh_s_2"]
    finally:
        await store.close()


async def test_one_postgresql_insert_with_rows_sharing_a_key() -> None:
    # The writer's multi-row statement itself (the batch above may be split by timing):
    # rows of one statement that share either key are not an error, one of them is
    # inserted and RETURNING names exactly the inserted ones.
    rows = [
        delivery(1, "evt_1", "sig:a"),
        delivery(2, "evt_1", "sig:b"),
        delivery(3, "evt_2", "sig:a"),
        delivery(4, "evt_9", "sig:z"),
        delivery(5, "evt_8", None),
        delivery(6, "evt_7", None),
    ]
    with postgres_database() as url:
        store = open_outbox(OutboxConfig(url=url))
        await store.start()
        await store.close()
        connection = await asyncpg.connect(url)
        try:
            records = await connection.fetch(
                INSERT,
                [r.id for r in rows],
                [r.source for r in rows],
                [r.replay_key for r in rows],
                [r.event_type for r in rows],
                [r.received_at for r in rows],
                [r.headers_json() for r in rows],
                [r.body for r in rows],
                [r.signature_key for r in rows],
            )
            stored = await connection.fetch("SELECT id FROM potok_webhook_deliveries")
        finally:
            await connection.close()
    inserted = {r[0] for r in records}
    assert inserted == {r[0] for r in stored}
    assert inserted == {"wh_s_1", "wh_s_4", "wh_s_5", "wh_s_6"}
