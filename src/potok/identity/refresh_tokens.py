"""Refresh tokens in families: each refresh rotates the token; using one twice revokes the family.

A refresh token is 256 random bits handed to the client once; the database
keeps only its SHA-256. Every token issued by refreshing belongs to the family
started at login. Presenting a token that was already used means it leaked or
was replayed: the whole family is revoked, and the access tokens it issued are
returned so the caller can put them on the denylist.

Two exceptions. A token presented again within `grace` seconds of its rotation
(two browser tabs refreshing at once, a retry after a lost answer) is "grace":
the caller issues another pair in the family and nothing is revoked (Auth0's
"reuse interval"). A token revoked without ever being used (the user was
disabled or changed password, the family was logged out) is "revoked": refused,
but no sign of theft.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select, update

from potok.identity.database import Database
from potok.identity.schema import refresh_tokens


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "rt_" + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class RefreshRecord:
    id: str
    family_id: str
    user_id: str
    issued_at: float
    expires_at: float
    used_at: float | None
    revoked_at: float | None
    access_jti: str
    access_expires_at: float


@dataclass(frozen=True, slots=True)
class Redemption:
    """What presenting a refresh token amounted to."""

    outcome: Literal["ok", "grace", "unknown", "expired", "revoked", "reused"]
    record: RefreshRecord | None = None
    # On reuse: access tokens of the family still alive, as (jti, expires_at).
    revoked_access: tuple[tuple[str, float], ...] = ()


def _record(row: object) -> RefreshRecord:
    m = row._mapping  # type: ignore[attr-defined]
    return RefreshRecord(
        id=m["id"],
        family_id=m["family_id"],
        user_id=m["user_id"],
        issued_at=m["issued_at"],
        expires_at=m["expires_at"],
        used_at=m["used_at"],
        revoked_at=m["revoked_at"],
        access_jti=m["access_jti"],
        access_expires_at=m["access_expires_at"],
    )


class RefreshTokenStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def issue(
        self,
        user_id: str,
        family_id: str | None,
        ttl: float,
        access_jti: str,
        access_expires_at: float,
    ) -> tuple[str, RefreshRecord]:
        """A new refresh token (in `family_id`, or a new family) and its record."""
        token = new_token()
        now = time.time()
        record = RefreshRecord(
            token_hash(token),
            family_id or secrets.token_hex(16),
            user_id,
            now,
            now + ttl,
            None,
            None,
            access_jti,
            access_expires_at,
        )
        async with self._db.engine.begin() as conn:
            await conn.execute(
                refresh_tokens.insert().values(
                    id=record.id,
                    family_id=record.family_id,
                    user_id=user_id,
                    issued_at=now,
                    expires_at=record.expires_at,
                    access_jti=access_jti,
                    access_expires_at=access_expires_at,
                )
            )
        return token, record

    async def redeem(self, token: str, grace: float = 0.0) -> Redemption:
        """Mark the token used, atomically: of two concurrent redemptions only one wins; the
        other is "grace" if it comes within `grace` seconds of the winner's."""
        digest = token_hash(token)
        now = time.time()
        by_id = select(refresh_tokens).where(refresh_tokens.c.id == digest)
        async with self._db.engine.begin() as conn:
            row = (await conn.execute(by_id)).first()
            if row is None:
                return Redemption("unknown")
            record = _record(row)
            claimed = await conn.execute(
                update(refresh_tokens)
                .where(
                    refresh_tokens.c.id == digest,
                    refresh_tokens.c.used_at.is_(None),
                    refresh_tokens.c.revoked_at.is_(None),
                )
                .values(used_at=now)
            )
            if claimed.rowcount == 1:
                if record.expires_at <= now:
                    return Redemption("expired", record)
                return Redemption("ok", record)
            # Read again: a concurrent redemption may have claimed it since the first read.
            current = (await conn.execute(by_id)).first()
        record = _record(current) if current is not None else record
        if record.used_at is None and record.revoked_at is not None:
            return Redemption("revoked", record)
        if (
            record.revoked_at is None
            and record.used_at is not None
            and now - record.used_at <= grace
            and record.expires_at > now
        ):
            return Redemption("grace", record)
        revoked = await self.revoke_family(record.family_id)
        return Redemption("reused", record, revoked)

    async def revoke_family(self, family_id: str) -> tuple[tuple[str, float], ...]:
        """Revoke every token of the family; the family's access tokens still alive."""
        now = time.time()
        async with self._db.engine.begin() as conn:
            await conn.execute(
                update(refresh_tokens)
                .where(
                    refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoked_at.is_(None)
                )
                .values(revoked_at=now)
            )
            rows = await conn.execute(
                select(refresh_tokens.c.access_jti, refresh_tokens.c.access_expires_at).where(
                    refresh_tokens.c.family_id == family_id,
                    refresh_tokens.c.access_expires_at > now,
                )
            )
            return tuple((row[0], row[1]) for row in rows)

    async def family_of(self, token: str) -> RefreshRecord | None:
        async with self._db.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(refresh_tokens).where(refresh_tokens.c.id == token_hash(token))
                )
            ).first()
        return _record(row) if row is not None else None

    async def family(self, family_id: str) -> list[RefreshRecord]:
        async with self._db.engine.connect() as conn:
            rows = await conn.execute(
                select(refresh_tokens)
                .where(refresh_tokens.c.family_id == family_id)
                .order_by(refresh_tokens.c.issued_at)
            )
            return [_record(row) for row in rows]

    async def revoke_user(self, user_id: str) -> None:
        async with self._db.engine.begin() as conn:
            await conn.execute(
                update(refresh_tokens)
                .where(refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
