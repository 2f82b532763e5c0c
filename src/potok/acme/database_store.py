"""The `database` storage: certificates, keys, the account and pending challenges in the
gateway's database (`database:`), so every instance of a cluster shares them.

The tables are the ACME layer's own (`potok_acme_*`), created on first use under the
same serialization the identity migrations use (an advisory transaction lock on
PostgreSQL, SQLite's write lock). Private keys are stored as PEM: whoever can read the
database can read them, as with the users' password hashes; restrict it accordingly.
"""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import JSON, Column, Float, MetaData, String, Table, Text, delete, select, text

from potok.acme.certificate import StoredCertificate
from potok.acme.lock import FileLock, OrderLock, PostgresAdvisoryLock
from potok.acme.store import StoredAccount
from potok.identity.database import Database

metadata = MetaData()

accounts = Table(
    "potok_acme_accounts",
    metadata,
    Column("directory_url", String(512), primary_key=True),
    Column("key_json", Text, nullable=False),
    Column("uri", String(512), nullable=True),
    Column("updated_at", Float, nullable=False),
)

certificates = Table(
    "potok_acme_certificates",
    metadata,
    Column("id", String(300), primary_key=True),
    Column("names", JSON, nullable=False),
    Column("chain_pem", Text, nullable=False),
    Column("key_pem", Text, nullable=False),
    Column("serial", String(64), nullable=False),
    Column("not_after", Float, nullable=False),
    Column("issued_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

challenges = Table(
    "potok_acme_challenges",
    metadata,
    Column("token", String(128), primary_key=True),
    Column("key_authorization", Text, nullable=False),
    Column("expires_at", Float, nullable=False),
)

_PG_CREATE_KEY = 0x706F746F6B  # the identity migrations' key: one creator at a time


class DatabaseStore:
    def __init__(self, database: Database) -> None:
        self.database = database
        self.engine = database.engine

    async def open(self) -> None:
        async with self.engine.begin() as connection:
            if not self.database.is_sqlite:
                await connection.execute(text(f"SELECT pg_advisory_xact_lock({_PG_CREATE_KEY})"))
            await connection.run_sync(lambda c: metadata.create_all(c, checkfirst=True))

    async def close(self) -> None:
        await self.database.close()

    def order_lock(self) -> OrderLock:
        if not self.database.is_sqlite:
            return PostgresAdvisoryLock(self.engine)
        file = self.engine.url.database
        if not file or file == ":memory:":
            raise ValueError("an in-memory SQLite database cannot be shared: no order lock")
        return FileLock(Path(f"{file}.acme-lock"))

    async def load_account(self, directory_url: str) -> StoredAccount | None:
        async with self.engine.connect() as connection:
            row = (
                await connection.execute(
                    select(accounts).where(accounts.c.directory_url == directory_url)
                )
            ).first()
        return StoredAccount(row.directory_url, row.key_json, row.uri) if row else None

    async def save_account(self, account: StoredAccount) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(
                delete(accounts).where(accounts.c.directory_url == account.directory_url)
            )
            await connection.execute(
                accounts.insert().values(
                    directory_url=account.directory_url,
                    key_json=account.key_json,
                    uri=account.uri,
                    updated_at=time.time(),
                )
            )

    async def load(self, certificate_id: str) -> StoredCertificate | None:
        async with self.engine.connect() as connection:
            row = (
                await connection.execute(
                    select(certificates).where(certificates.c.id == certificate_id)
                )
            ).first()
        return _certificate(row) if row else None

    async def save(self, certificate: StoredCertificate) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(
                delete(certificates).where(certificates.c.id == certificate.id)
            )
            await connection.execute(
                certificates.insert().values(
                    id=certificate.id,
                    names=list(certificate.names),
                    chain_pem=certificate.chain_pem.decode(),
                    key_pem=certificate.key_pem.decode(),
                    serial=certificate.serial,
                    not_after=certificate.not_after,
                    issued_at=certificate.issued_at,
                    revoked_at=certificate.revoked_at,
                )
            )

    async def all(self) -> list[StoredCertificate]:
        async with self.engine.connect() as connection:
            rows = await connection.execute(select(certificates).order_by(certificates.c.id))
            return [_certificate(row) for row in rows]

    async def publish_challenge(self, token: str, key_authorization: str, expires: float) -> None:
        async with self.engine.begin() as connection:
            # Expired answers of orders that never withdrew theirs (a crash) go here.
            await connection.execute(
                delete(challenges).where(challenges.c.expires_at < time.time())
            )
            await connection.execute(delete(challenges).where(challenges.c.token == token))
            await connection.execute(
                challenges.insert().values(
                    token=token, key_authorization=key_authorization, expires_at=expires
                )
            )

    async def withdraw_challenge(self, token: str) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(delete(challenges).where(challenges.c.token == token))

    async def challenge(self, token: str) -> str | None:
        async with self.engine.connect() as connection:
            row = (
                await connection.execute(
                    select(challenges.c.key_authorization).where(
                        challenges.c.token == token, challenges.c.expires_at >= time.time()
                    )
                )
            ).first()
        return str(row[0]) if row else None


def _certificate(row: object) -> StoredCertificate:
    stored = StoredCertificate.from_pem(
        tuple(row.names),  # type: ignore[attr-defined]
        row.chain_pem.encode(),  # type: ignore[attr-defined]
        row.key_pem.encode(),  # type: ignore[attr-defined]
        row.issued_at,  # type: ignore[attr-defined]
    )
    revoked = row.revoked_at  # type: ignore[attr-defined]
    return stored.revoked(revoked) if revoked is not None else stored
