"""The identity tables and the versioned migrations that create them.

Migrations are a small versioned table (`potok_schema_version`), not Alembic:
the gateway owns a handful of tables, must migrate itself at start-up from
several workers at once (serialized by an advisory lock on PostgreSQL and the
write lock on SQLite), and must not ship an `alembic.ini`/env.py that operators
run by hand. Each migration is a function over a connection, applied once, in
order, inside one transaction with its version row.

Times are UNIX seconds (float) so both backends store and compare them alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    select,
    text,
)

from potok.identity.database import Database

metadata = MetaData()

users = Table(
    "potok_users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("username", String(128), nullable=False, unique=True),
    Column("password_hash", String(256), nullable=False),
    Column("roles", JSON, nullable=False),
    Column("org", String(128), nullable=True),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

api_keys = Table(
    "potok_api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("roles", JSON, nullable=False),
    Column("org", String(128), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
    Column("last_used_at", Float, nullable=True),
    Column("replaced_by", String(32), nullable=True),
)

refresh_tokens = Table(
    "potok_refresh_tokens",
    metadata,
    Column("id", String(64), primary_key=True),  # sha256 of the token, never the token
    Column("family_id", String(32), nullable=False),
    Column("user_id", String(32), ForeignKey("potok_users.id"), nullable=False),
    Column("issued_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("used_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
    Column("access_jti", String(64), nullable=False),
    Column("access_expires_at", Float, nullable=False),
    Index("potok_refresh_tokens_family", "family_id"),
    Index("potok_refresh_tokens_user", "user_id"),
)

revocations = Table(
    "potok_revocations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # 'jti' or 'subject'
    Column("value", String(128), nullable=False),
    Column("revoked_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("potok_revocations_expires", "expires_at"),
)

audit_events = Table(
    "potok_audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("event", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("actor", String(200), nullable=True),
    Column("ip", String(64), nullable=True),
    Column("route", String(128), nullable=True),
    Column("request_id", String(128), nullable=True),
    Column("detail", Text, nullable=True),
    Index("potok_audit_events_at", "at"),
    Index("potok_audit_events_event", "event"),
)

# Failed logins per username ("user:<name>") and per client IP ("ip:<address>"), shared by
# every worker and instance (login_guard.py). `failures` holds the times of the failures
# still in the window (fewer than the limit: reaching it locks and clears them).
login_failures = Table(
    "potok_login_failures",
    metadata,
    Column("key", String(320), primary_key=True),
    Column("failures", JSON, nullable=False),
    Column("locked_until", Float, nullable=False),
    Column("lockouts", Integer, nullable=False),
    Column("expires_at", Float, nullable=False),  # the row says nothing after this: prunable
    Index("potok_login_failures_expires", "expires_at"),
)

schema_version = Table(
    "potok_schema_version",
    MetaData(),
    Column("version", Integer, primary_key=True),
    Column("name", String(128), nullable=False),
    Column("applied_at", Float, nullable=False),
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Connection], None]


def _initial(connection: Connection) -> None:
    # The tables of version 1 only: later tables come with their own migration.
    version_1 = [users, api_keys, refresh_tokens, revocations, audit_events]
    metadata.create_all(connection, tables=version_1)


def _login_failures(connection: Connection) -> None:
    login_failures.create(connection)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "identity tables", _initial),
    Migration(2, "login failures shared by every worker", _login_failures),
)

_PG_LOCK_KEY = 0x706F746F6B  # "potok": one advisory lock for all migrating workers


async def migrate(database: Database) -> list[int]:
    """Apply the migrations this database lacks; returns the versions applied now."""
    applied: list[int] = []
    async with database.engine.begin() as connection:
        if not database.is_sqlite:
            await connection.execute(text(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})"))
        await connection.run_sync(lambda c: schema_version.create(c, checkfirst=True))
        rows = await connection.execute(select(schema_version.c.version))
        done = {row[0] for row in rows}
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            await connection.run_sync(migration.apply)
            await connection.execute(
                schema_version.insert().values(
                    version=migration.version, name=migration.name, applied_at=time.time()
                )
            )
            applied.append(migration.version)
    return applied


async def current_version(database: Database) -> int:
    async with database.engine.connect() as connection:
        has_table = await connection.run_sync(lambda c: c.dialect.has_table(c, schema_version.name))
        if not has_table:
            return 0
        rows = await connection.execute(select(schema_version.c.version))
        return max((row[0] for row in rows), default=0)
