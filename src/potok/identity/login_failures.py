"""The login-failure counters in the identity database, changed under a row lock.

`LoginFailureStore.change` is the one way to write them: in one transaction it
creates the rows it needs, locks them, hands their state to a pure function
and writes back what that function returns. So every worker of every instance
sees one history of failures, and two of them can never both take the last
attempt before a lock-out:

- PostgreSQL: `INSERT ... ON CONFLICT DO NOTHING` then `SELECT ... FOR UPDATE`
  (in key order, so two transactions never wait on each other in a cycle); a
  concurrent change of the same key waits for the first to commit and then
  reads what it wrote (READ COMMITTED re-reads a locked row).
- SQLite: every transaction begins with `BEGIN IMMEDIATE` (database.py), which
  takes the database's write lock before the read, so changes run one after
  another; `FOR UPDATE` is not SQLite syntax and SQLAlchemy leaves it out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from potok.identity.schema import login_failures

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from potok.identity.database import Database

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Track:
    """One key's state: times of the failures in the window, lock-out, lock-outs so far."""

    failures: tuple[float, ...] = ()
    locked_until: float = 0.0
    lockouts: int = 0
    expires_at: float = 0.0  # when the row stops mattering (see LoginRules.expires_at)


EMPTY = Track()

# What a change returns per key: the new state, or None to delete the row.
Changes = Mapping[str, Track | None]

_COLUMNS = (
    login_failures.c.key,
    login_failures.c.failures,
    login_failures.c.locked_until,
    login_failures.c.lockouts,
    login_failures.c.expires_at,
)


def _track(row: Any) -> Track:
    return Track(tuple(float(t) for t in row[1]), float(row[2]), int(row[3]), float(row[4]))


def _values(track: Track) -> dict[str, Any]:
    return {
        "failures": list(track.failures),
        "locked_until": track.locked_until,
        "lockouts": track.lockouts,
        "expires_at": track.expires_at,
    }


class LoginFailureStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def read(self, keys: Iterable[str]) -> dict[str, Track]:
        """The current state of these keys (missing: never failed, or pruned). Not locked:
        good for a first look, not for a decision."""
        query = select(*_COLUMNS).where(login_failures.c.key.in_(sorted(set(keys))))
        async with self._db.engine.connect() as conn:
            return {row[0]: _track(row) for row in await conn.execute(query)}

    async def change(
        self,
        keys: Iterable[str],
        decide: Callable[[dict[str, Track]], tuple[Changes, T]],
        *,
        create: bool,
    ) -> T:
        """Lock the rows of `keys` (creating empty ones first when `create`), call
        `decide(current)` and write the changes it returns, all in one transaction.
        `decide` must not do I/O: it runs while the rows are locked."""
        ordered = sorted(set(keys))
        async with self._db.engine.begin() as conn:
            if create:
                await self._create_missing(conn, ordered)
            query = (
                select(*_COLUMNS)
                .where(login_failures.c.key.in_(ordered))
                .order_by(login_failures.c.key)
                .with_for_update()
            )
            current = {row[0]: _track(row) for row in await conn.execute(query)}
            changes, result = decide(current)
            for key in sorted(changes):
                track = changes[key]
                if track is None:
                    await conn.execute(delete(login_failures).where(login_failures.c.key == key))
                else:
                    await conn.execute(
                        update(login_failures)
                        .where(login_failures.c.key == key)
                        .values(**_values(track))
                    )
        return result

    async def prune(self, now: float) -> int:
        """Delete the rows that no longer matter; returns how many."""
        async with self._db.engine.begin() as conn:
            result = await conn.execute(
                delete(login_failures).where(login_failures.c.expires_at <= now)
            )
            return int(result.rowcount or 0)

    async def count(self) -> int:
        """Rows stored (for tests and diagnostics)."""
        async with self._db.engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(login_failures)) or 0)

    async def _create_missing(self, conn: AsyncConnection, keys: list[str]) -> None:
        rows = [{"key": key, **_values(EMPTY)} for key in keys]
        dialect = sqlite if self._db.is_sqlite else postgresql
        statement = dialect.insert(login_failures).values(rows).on_conflict_do_nothing()
        await conn.execute(statement)
