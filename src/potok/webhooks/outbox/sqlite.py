"""The SQLite outbox: one file per host, WAL, `synchronous=FULL`, group commit.

Every statement runs on one dedicated writer thread with its own connection, so the
event loop never blocks on the disk. The thread takes whatever jobs have queued up
while it was busy and runs them in ONE transaction: under load many deliveries share
one commit and one fsync of the WAL, and each caller's future is resolved only after
that commit returned (durable before the 2xx). Claims are leases (`lease_owner`,
`lease_until`) taken in the same kind of transaction; `BEGIN IMMEDIATE` takes the
write lock up front, so the workers of a host (one writer thread each) queue behind
each other on the file's lock instead of deadlocking.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

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
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL,
        replay_key TEXT NOT NULL,
        event_type TEXT NOT NULL,
        received_at REAL NOT NULL,
        headers TEXT NOT NULL,
        body BLOB NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL,
        lease_owner TEXT,
        lease_until REAL,
        last_error TEXT,
        delivered_at REAL,
        signature_key TEXT,
        UNIQUE (source, replay_key)
    )""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_due ON {TABLE} (state, next_at)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_source ON {TABLE} (source, state, seq)",
)
# Tables made before signature keys get the column (NULL in old rows: NULLs are distinct
# in a unique index, so they never collide) and then the index, which `INSERT OR IGNORE`
# honours like the first: a conflict on either is a replay.
ADD_SIGNATURE_KEY = f"ALTER TABLE {TABLE} ADD COLUMN signature_key TEXT"
SIGNATURE_INDEX = (
    f"CREATE UNIQUE INDEX IF NOT EXISTS {TABLE}_signature ON {TABLE} (source, signature_key)"
)

Job = Callable[[sqlite3.Connection], Any]
_STOP = None


class Atomic:
    """A job of several statements: run inside a savepoint, so a failure undoes all of it
    and nothing else of the batch. (A one-statement job needs none: SQLite undoes a
    failed statement by itself, and a savepoint is two more statements per delivery.)"""

    def __init__(self, job: Job) -> None:
        self.job = job

    def __call__(self, connection: sqlite3.Connection) -> Any:
        connection.execute("SAVEPOINT job")
        try:
            result = self.job(connection)
        except sqlite3.Error:
            connection.execute("ROLLBACK TO job")
            connection.execute("RELEASE job")
            raise
        connection.execute("RELEASE job")
        return result


class _Writer(threading.Thread):
    """The one thread that touches the file; jobs are batched into transactions."""

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop, batch: int) -> None:
        super().__init__(name="potok-webhooks-outbox", daemon=True)
        self._path = path
        self._loop = loop
        self._batch = batch
        self._jobs: queue.SimpleQueue[tuple[Job, asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self.commits = 0
        self.ready: asyncio.Future[None] = loop.create_future()

    def submit(self, job: Job) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        self._jobs.put((job, future))
        return future

    def stop(self) -> None:
        self._jobs.put(_STOP)

    def run(self) -> None:
        try:
            connection = self._connect()
        except Exception as exc:  # reported to start(), which raises it
            self._loop.call_soon_threadsafe(_fail_ready, self.ready, exc)
            return
        self._loop.call_soon_threadsafe(_set_ready, self.ready)
        try:
            self._serve(connection)
        finally:
            connection.close()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA busy_timeout=30000")
        connection.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit has reached the disk (WAL fsync) before it returns; NORMAL could
        # lose the last commits on power loss, and they were acknowledged.
        connection.execute("PRAGMA synchronous=FULL")
        _create_or_upgrade(connection)
        return connection

    def _serve(self, connection: sqlite3.Connection) -> None:
        jobs = self._jobs
        while True:
            first = jobs.get()
            if first is _STOP:
                return
            batch: list[tuple[Job, asyncio.Future[Any]] | None] = [first]
            stop = False
            while len(batch) < self._batch:
                try:
                    job = jobs.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stop = True
                    break
                batch.append(job)
            results = _run_batch(connection, batch)
            self.commits += 1
            self._loop.call_soon_threadsafe(_resolve, results)
            if stop:
                return


def _create_or_upgrade(connection: sqlite3.Connection) -> None:
    """The table as this version needs it, in one write transaction: the workers of a
    host starting together create or upgrade it once, the others find it done."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        for statement in SCHEMA:
            connection.execute(statement)
        columns = {row[1] for row in connection.execute(f"PRAGMA table_info({TABLE})")}
        if "signature_key" not in columns:
            connection.execute(ADD_SIGNATURE_KEY)
        connection.execute(SIGNATURE_INDEX)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def _run_batch(
    connection: sqlite3.Connection, batch: list[tuple[Job, asyncio.Future[Any]] | None]
) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
    """One transaction for the whole batch; a job that fails is undone alone (`Atomic`)."""
    results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
    try:
        connection.execute("BEGIN IMMEDIATE")
        for item in batch:
            assert item is not None
            job, future = item
            try:
                results.append((future, job(connection), None))
            except sqlite3.Error as exc:
                results.append((future, None, exc))
        connection.execute("COMMIT")
    except sqlite3.Error as exc:
        # Nothing of the batch is durable: every caller hears so (the ingress answers 503
        # and the provider retries).
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        log.error("outbox transaction failed", error=str(exc))
        return [(item[1], None, exc) for item in batch if item is not None]
    return results


def _resolve(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, error in results:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


def _set_ready(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fail_ready(future: asyncio.Future[None], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _file(url: str) -> str:
    return url.removeprefix("sqlite:///").partition("?")[0]


class SqliteOutbox:
    name = "sqlite"

    def __init__(self, config: Any) -> None:
        self._path = _file(config.url)
        self._batch = config.batch
        self._writer: _Writer | None = None

    @property
    def commits(self) -> int:
        return self._writer.commits if self._writer is not None else 0

    async def start(self) -> None:
        writer = _Writer(self._path, asyncio.get_running_loop(), self._batch)
        writer.start()
        await writer.ready
        self._writer = writer

    async def close(self) -> None:
        writer = self._writer
        if writer is not None:
            self._writer = None
            writer.stop()
            await asyncio.to_thread(writer.join, 10)

    def _submit(self, job: Job) -> asyncio.Future[Any]:
        if self._writer is None:
            raise RuntimeError("the outbox is not started")
        return self._writer.submit(job)

    def accept(self, delivery: NewDelivery) -> asyncio.Future[bool]:
        row = (
            delivery.id, delivery.source, delivery.replay_key, delivery.event_type,
            delivery.received_at, delivery.headers_json(), delivery.body, PENDING,
            delivery.received_at, delivery.signature_key,
        )  # fmt: skip

        def insert(connection: sqlite3.Connection) -> bool:
            # OR IGNORE: a conflict on any unique index (replay key, signature key) skips
            # the row, and rowcount 0 says it was a replay.
            cursor = connection.execute(
                f"INSERT OR IGNORE INTO {TABLE} (id, source, replay_key, event_type, "
                "received_at, headers, body, state, next_at, signature_key) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                row,
            )
            return cursor.rowcount == 1

        return self._submit(insert)

    async def claim(
        self, owner: str, now: float, limit: int, lease: float, ordered: tuple[str, ...]
    ) -> list[Delivery]:
        order_rule = ""
        if ordered:
            marks = ",".join("?" * len(ordered))
            order_rule = (
                f" AND (d.source NOT IN ({marks}) OR NOT EXISTS (SELECT 1 FROM {TABLE} e "
                "WHERE e.source = d.source AND e.state = 'pending' AND e.seq < d.seq))"
            )
        sql = (
            f"UPDATE {TABLE} SET lease_owner = ?, lease_until = ? WHERE seq IN ("
            f"SELECT d.seq FROM {TABLE} d WHERE d.state = 'pending' AND d.next_at <= ? "
            f"AND (d.lease_until IS NULL OR d.lease_until < ?){order_rule} "
            f"ORDER BY d.seq LIMIT ?) RETURNING {COLUMNS}"
        )
        params = (owner, now + lease, now, now, *ordered, limit)

        def take(connection: sqlite3.Connection) -> list[Delivery]:
            rows = connection.execute(sql, params).fetchall()
            return sorted((Delivery.from_row(r) for r in rows), key=lambda d: d.seq)

        result: list[Delivery] = await self._submit(take)
        return result

    async def settle(self, owner: str, outcomes: list[Outcome], now: float) -> None:
        def write(connection: sqlite3.Connection) -> None:
            for outcome in outcomes:
                _settle_one(connection, owner, outcome, now)

        await self._submit(Atomic(write))

    async def recent(self, state: str | None, source: str | None, limit: int) -> list[Delivery]:
        where, params = _filters(state, source)
        sql = f"SELECT {COLUMNS} FROM {TABLE}{where} ORDER BY seq DESC LIMIT ?"

        def read(connection: sqlite3.Connection) -> list[Delivery]:
            rows = connection.execute(sql, (*params, limit)).fetchall()
            return [Delivery.from_row(r) for r in rows]

        result: list[Delivery] = await self._submit(read)
        return result

    async def get(self, delivery_id: str) -> Delivery | None:
        def read(connection: sqlite3.Connection) -> Delivery | None:
            row = connection.execute(
                f"SELECT {COLUMNS} FROM {TABLE} WHERE id = ?", (delivery_id,)
            ).fetchone()
            return Delivery.from_row(row) if row is not None else None

        result: Delivery | None = await self._submit(read)
        return result

    async def replay(self, delivery_id: str, now: float) -> bool:
        def write(connection: sqlite3.Connection) -> bool:
            cursor = connection.execute(
                f"UPDATE {TABLE} SET state = 'pending', attempts = 0, next_at = ?, "
                "lease_owner = NULL, lease_until = NULL, delivered_at = NULL WHERE id = ?",
                (now, delivery_id),
            )
            return cursor.rowcount == 1

        result: bool = await self._submit(write)
        return result

    async def purge(self, state: str, before: float) -> int:
        def write(connection: sqlite3.Connection) -> int:
            cursor = connection.execute(
                f"DELETE FROM {TABLE} WHERE state = ? AND received_at < ?", (state, before)
            )
            return cursor.rowcount

        result: int = await self._submit(write)
        return result

    async def depth(self) -> list[Depth]:
        def read(connection: sqlite3.Connection) -> list[Depth]:
            rows = connection.execute(
                f"SELECT source, count(*), min(received_at) FROM {TABLE} "
                "WHERE state = 'pending' GROUP BY source"
            ).fetchall()
            return [Depth(r[0], int(r[1]), r[2]) for r in rows]

        result: list[Depth] = await self._submit(read)
        return result


def _settle_one(connection: sqlite3.Connection, owner: str, outcome: Outcome, now: float) -> None:
    if outcome.state == DELIVERED:
        connection.execute(
            f"UPDATE {TABLE} SET state = 'delivered', delivered_at = ?, attempts = attempts + 1, "
            "lease_owner = NULL, lease_until = NULL, last_error = NULL WHERE id = ?",
            (now, outcome.id),
        )
    elif outcome.state == DEAD:
        connection.execute(
            f"UPDATE {TABLE} SET state = 'dead', attempts = attempts + 1, last_error = ?, "
            "lease_owner = NULL, lease_until = NULL WHERE id = ? AND state = 'pending'",
            (outcome.error, outcome.id),
        )
    else:
        connection.execute(
            f"UPDATE {TABLE} SET attempts = attempts + ?, last_error = ?, next_at = ?, "
            "lease_owner = NULL, lease_until = NULL WHERE id = ? AND state = 'pending' "
            "AND lease_owner = ?",
            (int(outcome.attempted), outcome.error, outcome.next_at, outcome.id, owner),
        )


def _filters(state: str | None, source: str | None) -> tuple[str, tuple[str, ...]]:
    clauses, params = [], []
    if state is not None:
        clauses.append("state = ?")
        params.append(state)
    if source is not None:
        clauses.append("source = ?")
        params.append(source)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)
