"""The outbox side of bench/webhooks.sh: a fresh PostgreSQL database, the pending count,
and the end-to-end delivery latency (accepted -> delivered) of what was delivered.

    webhooks_report.py create-db NAME | drop-db NAME
    webhooks_report.py pending URL
    webhooks_report.py latency URL      # prints "count p50_ms p99_ms max_ms"
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys

import asyncpg

TABLE = "potok_webhook_deliveries"
PG = "postgresql://postgres@127.0.0.1:5432/"


async def _pg(url: str, sql: str) -> list[tuple[float, ...]]:
    connection = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await connection.fetch(sql)]
    finally:
        await connection.close()


def query(url: str, sql: str) -> list[tuple[float, ...]]:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            return connection.execute(sql).fetchall()
    return asyncio.run(_pg(url, sql))


def percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(len(values) * share))]


def main(command: str, argument: str) -> None:
    if command in ("create-db", "drop-db"):
        statement = (
            f'CREATE DATABASE "{argument}"'
            if command == "create-db"
            else f'DROP DATABASE IF EXISTS "{argument}" WITH (FORCE)'
        )
        asyncio.run(_pg(PG + "postgres", statement))
        return
    if command == "pending":
        print(query(argument, f"SELECT count(*) FROM {TABLE} WHERE state = 'pending'")[0][0])
        return
    rows = query(
        argument,
        f"SELECT delivered_at - received_at FROM {TABLE} WHERE state = 'delivered'",
    )
    latencies = sorted(float(r[0]) * 1000 for r in rows)
    if not latencies:
        print("0 - - -")
        return
    print(
        f"{len(latencies)} {percentile(latencies, 0.5):.1f} "
        f"{percentile(latencies, 0.99):.1f} {latencies[-1]:.1f}"
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
