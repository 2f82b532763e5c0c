"""The PostgreSQL outbox: shared by every gateway of a cluster.

Accepted deliveries are written by one writer task per worker that takes whatever has
queued while the previous insert committed and writes it as ONE multi-row insert (one
commit, one WAL flush with the server's default `synchronous_commit = on`); each
caller's future is resolved after that commit (durable before the 2xx). The unique
(source, replay_key) and (source, signature_key) indexes make a replay — a matching id or
matching signed content — a no-op on every instance at once. Claims
take rows with `FOR UPDATE SKIP LOCKED`, so two instances never pick the same row,
and lease them for the time of the send.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import structlog

from potok.webhooks.outbox.base import (
    COLUMNS,
    DEAD,
    DELIVERED,
    PENDING,
    TABLE,
    Delivery,
    Depth,
    NewDelivery,
    Outcome,
)

log = structlog.get_logger("potok.webhooks")

SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL,
        replay_key TEXT NOT NULL,
        event_type TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        headers TEXT NOT NULL,
        body BYTEA NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at DOUBLE PRECISION NOT NULL,
        lease_owner TEXT,
        lease_until DOUBLE PRECISION,
        last_error TEXT,
        delivered_at DOUBLE PRECISION,
        signature_key TEXT,
        UNIQUE (source, replay_key)
    )""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_due ON {TABLE} (state, next_at)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_source ON {TABLE} (source, state, seq)",
    # Tables made before signature keys: the column (NULL in old rows, and NULLs are
    # distinct in a unique index, so they never collide), then its index.
    f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS signature_key TEXT",
    f"CREATE UNIQUE INDEX IF NOT EXISTS {TABLE}_signature ON {TABLE} (source, signature_key)",
)

# ON CONFLICT without a target: a conflict on ANY unique index (replay key or signature
# key, also between two rows of one batch) skips the row; RETURNING lists only the rows
# inserted, so a missing id is a replay.
INSERT = (
    f"INSERT INTO {TABLE} (id, source, replay_key, event_type, received_at, headers, body, "
    "state, next_at, signature_key) SELECT i, s, k, t, r, h, b, 'pending', r, g FROM unnest("
    "$1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::text[], $7::bytea[], "
    "$8::text[]) AS x(i, s, k, t, r, h, b, g) ON CONFLICT DO NOTHING RETURNING id"
)


WRITERS = 2


def _dsn(url: str) -> str:
    return "postgresql://" + url.split("://", 1)[1]


class PostgresOutbox:
    name = "postgresql"

    def __init__(self, config: Any) -> None:
        self._dsn = _dsn(config.url)
        self._pool_size = config.pool_size
        self._batch = config.batch
        self._pool: asyncpg.Pool | None = None
        self._queue: asyncio.Queue[tuple[NewDelivery, asyncio.Future[bool]]] = asyncio.Queue()
        self._writers: list[asyncio.Task[None]] = []
        self.commits = 0

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(
            self._dsn, min_size=1, max_size=self._pool_size, timeout=10
        )
        async with self._pool.acquire() as connection, connection.transaction():
            # Instances starting together: one creates, the others wait and find it.
            await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", TABLE)
            for statement in SCHEMA:
                await connection.execute(statement)
        # Two writers: while one batch waits for its commit's WAL flush, the next is
        # already on its way (the server's own group commit merges their flushes).
        loop = asyncio.get_running_loop()
        self._writers = [loop.create_task(self._write_forever()) for _ in range(WRITERS)]

    async def close(self) -> None:
        for writer in self._writers:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        self._writers = []
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the outbox is not started")
        return self._pool

    def accept(self, delivery: NewDelivery) -> asyncio.Future[bool]:
        if not self._writers:
            raise RuntimeError("the outbox is not started")
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((delivery, future))
        return future

    async def _write_forever(self) -> None:
        queue = self._queue
        while True:
            batch = [await queue.get()]
            while len(batch) < self._batch and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                inserted = await self._insert([item[0] for item in batch])
            except (asyncpg.PostgresError, OSError) as exc:
                log.error("outbox insert failed", error=str(exc))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.commits += 1
            for delivery, future in batch:
                if not future.done():
                    future.set_result(delivery.id in inserted)

    async def _insert(self, rows: list[NewDelivery]) -> set[str]:
        records = await self.pool.fetch(
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
        return {record[0] for record in records}

    async def claim(
        self, owner: str, now: float, limit: int, lease: float, ordered: tuple[str, ...]
    ) -> list[Delivery]:
        order_rule = (
            " AND (NOT d.source = ANY($5::text[]) OR NOT EXISTS (SELECT 1 FROM "
            f"{TABLE} e WHERE e.source = d.source AND e.state = 'pending' AND e.seq < d.seq))"
        )
        sql = (
            f"UPDATE {TABLE} SET lease_owner = $1, lease_until = $2 WHERE seq IN ("
            f"SELECT d.seq FROM {TABLE} d WHERE d.state = 'pending' AND d.next_at <= $3 "
            f"AND (d.lease_until IS NULL OR d.lease_until < $3){order_rule} "
            f"ORDER BY d.seq LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING {COLUMNS}"
        )
        rows = await self.pool.fetch(sql, owner, now + lease, now, limit, list(ordered))
        return sorted((Delivery.from_row(r) for r in rows), key=lambda d: d.seq)

    async def settle(self, owner: str, outcomes: list[Outcome], now: float) -> None:
        delivered = [o.id for o in outcomes if o.state == DELIVERED]
        dead = [(o.error, o.id) for o in outcomes if o.state == DEAD]
        retry = [
            (int(o.attempted), o.error, o.next_at, o.id, owner)
            for o in outcomes
            if o.state == PENDING
        ]
        async with self.pool.acquire() as connection, connection.transaction():
            if delivered:
                await connection.execute(
                    f"UPDATE {TABLE} SET state = 'delivered', delivered_at = $1, "
                    "attempts = attempts + 1, lease_owner = NULL, lease_until = NULL, "
                    "last_error = NULL WHERE id = ANY($2::text[])",
                    now,
                    delivered,
                )
            if dead:
                await connection.executemany(
                    f"UPDATE {TABLE} SET state = 'dead', attempts = attempts + 1, "
                    "last_error = $1, lease_owner = NULL, lease_until = NULL "
                    "WHERE id = $2 AND state = 'pending'",
                    dead,
                )
            if retry:
                await connection.executemany(
                    f"UPDATE {TABLE} SET attempts = attempts + $1, last_error = $2, "
                    "next_at = $3, lease_owner = NULL, lease_until = NULL "
                    "WHERE id = $4 AND state = 'pending' AND lease_owner = $5",
                    retry,
                )

    async def recent(self, state: str | None, source: str | None, limit: int) -> list[Delivery]:
        rows = await self.pool.fetch(
            f"SELECT {COLUMNS} FROM {TABLE} WHERE ($1::text IS NULL OR state = $1) "
            "AND ($2::text IS NULL OR source = $2) ORDER BY seq DESC LIMIT $3",
            state,
            source,
            limit,
        )
        return [Delivery.from_row(r) for r in rows]

    async def get(self, delivery_id: str) -> Delivery | None:
        row = await self.pool.fetchrow(f"SELECT {COLUMNS} FROM {TABLE} WHERE id = $1", delivery_id)
        return Delivery.from_row(row) if row is not None else None

    async def replay(self, delivery_id: str, now: float) -> bool:
        status = await self.pool.execute(
            f"UPDATE {TABLE} SET state = 'pending', attempts = 0, next_at = $1, "
            "lease_owner = NULL, lease_until = NULL, delivered_at = NULL WHERE id = $2",
            now,
            delivery_id,
        )
        return bool(status.endswith(" 1"))

    async def purge(self, state: str, before: float) -> int:
        status = await self.pool.execute(
            f"DELETE FROM {TABLE} WHERE state = $1 AND received_at < $2", state, before
        )
        return int(status.rsplit(" ", 1)[1])

    async def depth(self) -> list[Depth]:
        rows = await self.pool.fetch(
            f"SELECT source, count(*), min(received_at) FROM {TABLE} "
            "WHERE state = 'pending' GROUP BY source"
        )
        return [Depth(r[0], int(r[1]), r[2]) for r in rows]
