"""Users, API keys and the audit log through the admin API: the same stores and rules as
`potok users|keys|audit`, on the running gateway's database (shared by every worker and
every instance). A revoked key or a disabled user is refused at once on every worker:
the acting worker asks every worker to refresh its key mirror, and a disabled user's
tokens are cut through the revocation channel (database, and Redis when configured)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from potok.identity import audit as events
from potok.identity.api_keys import ApiKey, ApiKeyStore
from potok.identity.refresh_tokens import RefreshTokenStore
from potok.identity.revocation import SUBJECT
from potok.identity.users import User, UserError, UserStore

if TYPE_CHECKING:
    from potok.identity.audit import AuditEvent
    from potok.identity.database import Database
    from potok.identity.services import IdentityServices


class NoDatabase(Exception):
    pass


def _database(identity: IdentityServices) -> Database:
    if identity.database is None:
        raise NoDatabase("this gateway has no database (database:, auth.token_service)")
    return identity.database


def user_row(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "roles": list(user.roles),
        "org": user.org,
        "disabled": user.disabled,
        "created_at": user.created_at,
    }


def key_row(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "state": key.state(time.time()),
        "scopes": list(key.scopes),
        "roles": list(key.roles),
        "org": key.org,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
        "last_used_at": key.last_used_at,
        "replaced_by": key.replaced_by,
    }


def event_row(event: AuditEvent) -> dict[str, Any]:
    return {
        "at": event.at,
        "action": event.event,
        "outcome": event.outcome,
        "actor": event.actor,
        "ip": event.ip,
        "route": event.route,
        "request_id": event.request_id,
        "detail": event.detail,
    }


async def list_users(identity: IdentityServices) -> list[User]:
    return await UserStore(_database(identity)).all()


async def create_user(
    identity: IdentityServices,
    *,
    username: str,
    password: str,
    roles: tuple[str, ...],
    org: str | None,
    by: str,
) -> User:
    store = UserStore(_database(identity))
    user = await store.add(username, await identity.hasher.hash(password), roles, org)
    identity.audit.record(events.USER_CREATED, "ok", actor=user.username, detail={"by": by})
    return user


async def set_disabled(identity: IdentityServices, username: str, disabled: bool, by: str) -> User:
    database = _database(identity)
    user = await UserStore(database).update(username, disabled=disabled)
    if disabled:  # end the sessions: refresh tokens, and access tokens through revocation
        await RefreshTokenStore(database).revoke_user(user.id)
        horizon = time.time() + identity.config.auth.token_service.access_ttl + 60
        await identity.revocations.revoke(SUBJECT, user.id, horizon)
    change = "disable" if disabled else "enable"
    identity.audit.record(
        events.USER_CHANGED, "ok", actor=user.username, detail={"change": change, "by": by}
    )
    return user


async def list_keys(identity: IdentityServices) -> list[ApiKey]:
    return await ApiKeyStore(_database(identity)).all()


async def create_key(
    identity: IdentityServices,
    *,
    name: str,
    scopes: tuple[str, ...],
    roles: tuple[str, ...],
    org: str | None,
    expires_in: float | None,
    by: str,
) -> tuple[ApiKey, str]:
    expires = time.time() + expires_in if expires_in else None
    key, plaintext = await ApiKeyStore(_database(identity)).create(
        name, scopes, roles, org, expires
    )
    identity.audit.record(events.KEY_CREATED, "ok", actor=key.id, detail={"name": name, "by": by})
    return key, plaintext


async def revoke_key(identity: IdentityServices, key_id: str, by: str) -> ApiKey:
    key = await ApiKeyStore(_database(identity)).revoke(key_id)
    identity.audit.record(events.KEY_REVOKED, "ok", actor=key.id, detail={"by": by})
    return key


async def rotate_key(
    identity: IdentityServices, key_id: str, overlap: float, expires_in: float | None, by: str
) -> tuple[ApiKey, ApiKey, str]:
    old, new, plaintext = await ApiKeyStore(_database(identity)).rotate(key_id, overlap, expires_in)
    identity.audit.record(
        events.KEY_ROTATED, "ok", actor=old.id, detail={"new_key": new.id, "by": by}
    )
    return old, new, plaintext


async def query_audit(
    identity: IdentityServices,
    *,
    since: float | None,
    until: float | None,
    actor: str | None,
    action: str | None,
    limit: int,
) -> list[AuditEvent]:
    _database(identity)
    store = identity.audit.store
    assert store is not None
    await identity.audit.flush()  # this worker's latest calls, this one included
    return await store.query(since=since, until=until, event=action, actor=actor, limit=limit)


__all__ = ["NoDatabase", "UserError"]
