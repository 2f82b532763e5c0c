"""Users of the token service: username, argon2id hash, roles, organisation, disabled flag."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from potok.identity.database import Database
from potok.identity.schema import users

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$")
ROLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


class UserError(Exception):
    """A user operation that cannot be done, with a message for the operator."""


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    password_hash: str
    roles: tuple[str, ...]
    org: str | None
    disabled: bool
    created_at: float
    updated_at: float


def check_username(username: str) -> str:
    if not USERNAME.match(username):
        raise UserError("a username is 1-128 of letters, digits and '_.@+-', starting alphanumeric")
    return username


def check_roles(roles: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    for role in roles:
        if not ROLE.match(role):
            raise UserError(f"role {role!r}: letters, digits and '_.:-', at most 64")
    return tuple(dict.fromkeys(roles))


def _user(row: object) -> User:
    mapping = row._mapping  # type: ignore[attr-defined]
    return User(
        id=mapping["id"],
        username=mapping["username"],
        password_hash=mapping["password_hash"],
        roles=tuple(mapping["roles"] or ()),
        org=mapping["org"],
        disabled=bool(mapping["disabled"]),
        created_at=mapping["created_at"],
        updated_at=mapping["updated_at"],
    )


class UserStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def add(
        self, username: str, password_hash: str, roles: tuple[str, ...], org: str | None
    ) -> User:
        check_username(username)
        roles = check_roles(roles)
        now = time.time()
        user = User(uuid.uuid4().hex, username, password_hash, roles, org, False, now, now)
        try:
            async with self._db.engine.begin() as conn:
                await conn.execute(
                    users.insert().values(
                        id=user.id,
                        username=username,
                        password_hash=password_hash,
                        roles=list(roles),
                        org=org,
                        disabled=False,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            raise UserError(f"user {username!r} already exists") from None
        return user

    async def by_username(self, username: str) -> User | None:
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(select(users).where(users.c.username == username))).first()
        return _user(row) if row is not None else None

    async def by_id(self, user_id: str) -> User | None:
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
        return _user(row) if row is not None else None

    async def all(self) -> list[User]:
        async with self._db.engine.connect() as conn:
            rows = await conn.execute(select(users).order_by(users.c.username))
            return [_user(row) for row in rows]

    async def update(
        self,
        username: str,
        *,
        password_hash: str | None = None,
        roles: tuple[str, ...] | None = None,
        org: str | None = None,
        clear_org: bool = False,
        disabled: bool | None = None,
    ) -> User:
        values: dict[str, object] = {"updated_at": time.time()}
        if password_hash is not None:
            values["password_hash"] = password_hash
        if roles is not None:
            values["roles"] = list(check_roles(roles))
        if org is not None or clear_org:
            values["org"] = org
        if disabled is not None:
            values["disabled"] = disabled
        async with self._db.engine.begin() as conn:
            result = await conn.execute(
                update(users).where(users.c.username == username).values(**values)
            )
            if result.rowcount == 0:
                raise UserError(f"no user {username!r}")
        found = await self.by_username(username)
        assert found is not None
        return found
