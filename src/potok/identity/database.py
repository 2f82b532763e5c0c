"""One async database layer for SQLite (default) and PostgreSQL, on SQLAlchemy Core.

Callers get an `AsyncEngine` whose transactions behave the same on both:
SQLite runs in WAL mode, waits on a busy lock instead of failing, and every
transaction takes the write lock up front (`BEGIN IMMEDIATE`) so two writers
never deadlock on a lock upgrade.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from potok.identity.config import DatabaseConfig


def async_url(url: str) -> str:
    """The SQLAlchemy URL with the async driver: aiosqlite or asyncpg."""
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url.removeprefix("sqlite:")
    if url.startswith("postgres://"):
        return "postgresql+asyncpg://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        return "postgresql+asyncpg://" + url.removeprefix("postgresql://")
    return url


def redacted(url: str) -> str:
    """The URL for logs: the password never appears."""
    return make_url(async_url(url)).render_as_string(hide_password=True)


class Database:
    """The engine of one worker (or one CLI command); `close()` releases its connections."""

    def __init__(self, config: DatabaseConfig) -> None:
        self.url = async_url(config.url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        options: dict[str, Any] = {}
        if self.dialect == "sqlite":
            options["connect_args"] = {"timeout": config.connect_timeout}
        else:
            options["pool_size"] = config.pool_size
            options["max_overflow"] = config.pool_size
            options["pool_pre_ping"] = True
            options["connect_args"] = {"timeout": config.connect_timeout}
        self.engine: AsyncEngine = create_async_engine(self.url, **options)
        if self.dialect == "sqlite":
            _sqlite_behaviour(self.engine)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    async def close(self) -> None:
        await self.engine.dispose()


def _sqlite_behaviour(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        # The driver's own transaction handling is switched off; `begin` below takes over.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
