"""API keys: `pk_<id>_<secret>`, stored as the SHA-256 of the secret, never in plaintext.

The secret is 256 random bits, so a fast hash is enough (nothing to brute-force)
and lets every request be checked without argon2's cost. The public `id` part
finds the row; the secret is compared in constant time.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select, update

from potok.identity.database import Database
from potok.identity.schema import api_keys
from potok.identity.users import UserError, check_roles

PREFIX = "pk_"
_KEY = re.compile(r"^pk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
SCOPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/*-]{0,127}$")


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(key: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key, or None."""
    match = _KEY.match(key)
    return (match.group(1), match.group(2)) if match else None


def check_scopes(scopes: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    for scope in scopes:
        if not SCOPE.match(scope):
            raise UserError(f"scope {scope!r}: letters, digits and '_.:/*-', at most 128")
    return tuple(dict.fromkeys(scopes))


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    secret_hash: str
    scopes: tuple[str, ...]
    roles: tuple[str, ...]
    org: str | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None
    replaced_by: str | None

    def usable_at(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def state(self, now: float) -> str:
        """ "active", "expired" or "revoked", as `potok keys list` and the admin API say."""
        if self.revoked_at:
            return "revoked"
        return "active" if self.usable_at(now) else "expired"


def _key(row: object) -> ApiKey:
    m = row._mapping  # type: ignore[attr-defined]
    return ApiKey(
        id=m["id"],
        name=m["name"],
        secret_hash=m["secret_hash"],
        scopes=tuple(m["scopes"] or ()),
        roles=tuple(m["roles"] or ()),
        org=m["org"],
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
        last_used_at=m["last_used_at"],
        replaced_by=m["replaced_by"],
    )


class ApiKeyStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def create(
        self,
        name: str,
        scopes: tuple[str, ...] = (),
        roles: tuple[str, ...] = (),
        org: str | None = None,
        expires_at: float | None = None,
    ) -> tuple[ApiKey, str]:
        """The new key's record and the key itself: the only time the key is ever visible."""
        if not name or len(name) > 128:
            raise UserError("a key needs a name of at most 128 characters")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        now = time.time()
        record = ApiKey(
            key_id,
            name,
            secret_hash(secret),
            check_scopes(scopes),
            check_roles(roles),
            org,
            now,
            expires_at,
            None,
            None,
            None,
        )
        async with self._db.engine.begin() as conn:
            await conn.execute(
                api_keys.insert().values(
                    id=record.id,
                    name=record.name,
                    secret_hash=record.secret_hash,
                    scopes=list(record.scopes),
                    roles=list(record.roles),
                    org=org,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
        return record, f"{PREFIX}{key_id}_{secret}"

    async def get(self, key_id: str) -> ApiKey | None:
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        return _key(row) if row is not None else None

    async def all(self) -> list[ApiKey]:
        async with self._db.engine.connect() as conn:
            rows = await conn.execute(select(api_keys).order_by(api_keys.c.created_at))
            return [_key(row) for row in rows]

    async def usable(self, now: float) -> list[ApiKey]:
        """Keys not revoked and not expired: what the per-worker mirror holds."""
        query = select(api_keys).where(
            api_keys.c.revoked_at.is_(None),
            (api_keys.c.expires_at.is_(None)) | (api_keys.c.expires_at > now),
        )
        async with self._db.engine.connect() as conn:
            return [_key(row) for row in await conn.execute(query)]

    async def revoke(self, key_id: str) -> ApiKey:
        async with self._db.engine.begin() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
        key = await self.get(key_id)
        if key is None:
            raise UserError(f"no key {key_id!r}")
        if result.rowcount == 0:
            raise UserError(f"key {key_id!r} was already revoked")
        return key

    async def rotate(
        self, key_id: str, overlap: float, lifetime: float | None = None
    ) -> tuple[ApiKey, ApiKey, str]:
        """A new key with the same name, scopes, roles and org; the old one expires after
        `overlap` seconds (so clients can switch). Returns (old, new, new key).

        The new key lives `lifetime` seconds from now; by default as long as the old key was
        given at its creation (a key about to expire is renewed for a full term), and without
        expiry if the old one had none."""
        old = await self.get(key_id)
        if old is None:
            raise UserError(f"no key {key_id!r}")
        now = time.time()
        if not old.usable_at(now):
            raise UserError(f"key {key_id!r} is revoked or expired; create a new one instead")
        if lifetime is None and old.expires_at is not None:
            lifetime = old.expires_at - old.created_at
        expires_at = now + lifetime if lifetime is not None else None
        new, plaintext = await self.create(old.name, old.scopes, old.roles, old.org, expires_at)
        ends = now + overlap
        if old.expires_at is not None:
            ends = min(ends, old.expires_at)
        async with self._db.engine.begin() as conn:
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id)
                .values(expires_at=ends, replaced_by=new.id)
            )
        updated = await self.get(key_id)
        assert updated is not None
        return updated, new, plaintext

    async def record_use(self, last_used: dict[str, float]) -> None:
        """Write many last-used times in one transaction (called in batches, not per request)."""
        if not last_used:
            return
        async with self._db.engine.begin() as conn:
            for key_id, at in last_used.items():
                await conn.execute(
                    update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=at)
                )
