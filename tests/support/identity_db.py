"""Databases for identity tests: a SQLite file, or a fresh PostgreSQL database per test run.

PostgreSQL runs on 127.0.0.1:5432 (trust auth, user postgres). Each run gets
its own database, `potok_test_<pid>_<random>`, dropped at the end, so parallel
runs and earlier leftovers never collide.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import asyncpg

PG_HOST = os.environ.get("POTOK_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("POTOK_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("POTOK_TEST_PG_USER", "postgres")


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres", timeout=10
    )
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _run(statement: str) -> None:
    # In a thread of its own: callers may be inside a running event loop (async fixtures).
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _admin(statement)).result(30)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for the duration; yields its URL."""
    name = f"potok_test_{os.getpid()}_{secrets.token_hex(4)}"
    _run(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        _run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
