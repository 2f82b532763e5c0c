"""One contract suite for the identity data layer, run against SQLite and real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import select, text

from potok.identity.api_keys import ApiKeyStore, parse_key, secret_hash
from potok.identity.audit import AuditEvent, AuditStore
from potok.identity.config import DatabaseConfig
from potok.identity.database import Database, async_url, redacted
from potok.identity.refresh_tokens import RefreshTokenStore
from potok.identity.revocation import JTI, SUBJECT, RevocationStore
from potok.identity.schema import MIGRATIONS, api_keys, current_version, migrate
from potok.identity.users import UserError, UserStore
from tests.support.identity_db import postgres_database

TABLES = (
    "potok_refresh_tokens",
    "potok_api_keys",
    "potok_users",
    "potok_revocations",
    "potok_audit_events",
)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request, tmp_path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/identity.db"
    else:
        url = request.getfixturevalue("postgres_url")
    database = Database(DatabaseConfig(url=url))
    await migrate(database)
    async with database.engine.begin() as conn:
        for table in TABLES:
            await conn.execute(text(f"DELETE FROM {table}"))
    yield database
    await database.close()


def test_urls_get_the_async_drivers():
    assert async_url("sqlite:///a/b.db") == "sqlite+aiosqlite:///a/b.db"
    assert async_url("postgresql://u@h/d") == "postgresql+asyncpg://u@h/d"
    assert async_url("postgres://u@h/d") == "postgresql+asyncpg://u@h/d"
    assert "s3cret" not in redacted("postgresql://u:s3cret@h/d")


async def test_migrations_are_applied_once(db):
    assert await current_version(db) == MIGRATIONS[-1].version
    assert await migrate(db) == []
    # Several workers migrating at once: serialized, nothing applied twice.
    results = await asyncio.gather(*(migrate(db) for _ in range(4)))
    assert results == [[], [], [], []]


async def test_migrating_an_empty_database_from_scratch(tmp_path):
    database = Database(DatabaseConfig(url=f"sqlite:///{tmp_path}/new/x.db"))
    tmp_path.joinpath("new").mkdir()
    try:
        assert await current_version(database) == 0
        assert await migrate(database) == [m.version for m in MIGRATIONS]
    finally:
        await database.close()


async def test_users(db):
    store = UserStore(db)
    alice = await store.add("alice", "hash-a", ("admin", "dev"), "acme")
    assert (await store.by_username("alice")) == alice
    assert (await store.by_id(alice.id)) == alice
    assert await store.by_username("nobody") is None
    with pytest.raises(UserError, match="already exists"):
        await store.add("alice", "h", (), None)
    with pytest.raises(UserError):
        await store.add("bad name; drop table", "h", (), None)
    changed = await store.update("alice", disabled=True, roles=("viewer",), clear_org=True)
    assert changed.disabled and changed.roles == ("viewer",) and changed.org is None
    with pytest.raises(UserError, match="no user"):
        await store.update("nobody", disabled=True)
    await store.add("bob", "hash-b", (), None)
    assert [u.username for u in await store.all()] == ["alice", "bob"]


async def test_api_keys_are_stored_hashed(db):
    store = ApiKeyStore(db)
    key, plaintext = await store.create("billing", ("orders:read",), ("service",), "acme")
    key_id, secret = parse_key(plaintext)
    assert key_id == key.id
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(api_keys))).all()
    assert len(rows) == 1
    assert secret not in repr(rows) and plaintext not in repr(rows)
    assert rows[0]._mapping["secret_hash"] == secret_hash(secret)
    assert [k.id for k in await store.usable(time.time())] == [key.id]


async def test_revoked_and_expired_keys_are_not_usable(db):
    store = ApiKeyStore(db)
    live, _ = await store.create("live")
    gone, _ = await store.create("gone")
    old, _ = await store.create("old", expires_at=time.time() - 1)
    await store.revoke(gone.id)
    with pytest.raises(UserError, match="already revoked"):
        await store.revoke(gone.id)
    with pytest.raises(UserError, match="no key"):
        await store.revoke("0000000000000000")
    assert {k.id for k in await store.usable(time.time())} == {live.id}
    assert old.id in {k.id for k in await store.all()}


async def test_rotation_keeps_the_old_key_for_the_overlap(db):
    store = ApiKeyStore(db)
    key, _ = await store.create("svc", ("a",), (), "acme")
    old, new, plaintext = await store.rotate(key.id, overlap=3600)
    assert parse_key(plaintext)[0] == new.id
    assert new.scopes == ("a",) and new.org == "acme" and new.name == "svc"
    assert old.replaced_by == new.id
    assert old.expires_at is not None and 3500 < old.expires_at - time.time() <= 3600
    usable = {k.id for k in await store.usable(time.time())}
    assert usable == {key.id, new.id}
    assert {k.id for k in await store.usable(time.time() + 3601)} == {new.id}


async def test_last_used_is_written_in_one_batch(db):
    store = ApiKeyStore(db)
    a, _ = await store.create("a")
    b, _ = await store.create("b")
    await store.record_use({a.id: 100.0, b.id: 200.0})
    found = {k.id: k.last_used_at for k in await store.all()}
    assert found == {a.id: 100.0, b.id: 200.0}


async def test_refresh_rotation_and_reuse_revokes_the_family(db):
    users = UserStore(db)
    user = await users.add("carol", "h", (), None)
    store = RefreshTokenStore(db)
    first, record = await store.issue(user.id, None, 3600, "jti-1", time.time() + 600)
    used = await store.redeem(first)
    assert used.outcome == "ok" and used.record == record
    second, _ = await store.issue(user.id, record.family_id, 3600, "jti-2", time.time() + 600)
    replay = await store.redeem(first)
    assert replay.outcome == "reused"
    assert {jti for jti, _ in replay.revoked_access} == {"jti-1", "jti-2"}
    # The family is dead: the newest token does not work either (refused as revoked: it was
    # never used, so presenting it is no new sign of theft).
    assert (await store.redeem(second)).outcome == "revoked"
    assert all(r.revoked_at is not None for r in await store.family(record.family_id))
    assert (await store.redeem("rt_unknown")).outcome == "unknown"


async def test_concurrent_redemptions_only_one_wins(db):
    user = await UserStore(db).add("dave", "h", (), None)
    store = RefreshTokenStore(db)
    token, _ = await store.issue(user.id, None, 3600, "jti", time.time() + 60)
    outcomes = await asyncio.gather(*(store.redeem(token) for _ in range(5)))
    assert sorted(o.outcome for o in outcomes).count("ok") == 1


async def test_a_second_presentation_within_the_reuse_interval_revokes_nothing(db):
    user = await UserStore(db).add("grace", "h", (), None)
    store = RefreshTokenStore(db)
    token, record = await store.issue(user.id, None, 3600, "jti-1", time.time() + 600)
    assert (await store.redeem(token, grace=5.0)).outcome == "ok"
    again = await store.redeem(token, grace=5.0)
    assert again.outcome == "grace" and again.revoked_access == ()
    assert all(r.revoked_at is None for r in await store.family(record.family_id))


async def test_a_presentation_after_the_reuse_interval_revokes_the_family(db):
    user = await UserStore(db).add("late", "h", (), None)
    store = RefreshTokenStore(db)
    token, record = await store.issue(user.id, None, 3600, "jti-1", time.time() + 600)
    assert (await store.redeem(token, grace=0.2)).outcome == "ok"
    await asyncio.sleep(0.3)
    assert (await store.redeem(token, grace=0.2)).outcome == "reused"
    assert all(r.revoked_at is not None for r in await store.family(record.family_id))


async def test_a_never_used_token_of_a_revoked_user_is_not_reuse(db):
    user = await UserStore(db).add("gone", "h", (), None)
    store = RefreshTokenStore(db)
    token, _ = await store.issue(user.id, None, 3600, "jti-1", time.time() + 600)
    await store.revoke_user(user.id)
    assert (await store.redeem(token, grace=5.0)).outcome == "revoked"


async def test_expired_refresh_token(db):
    user = await UserStore(db).add("erin", "h", (), None)
    store = RefreshTokenStore(db)
    token, _ = await store.issue(user.id, None, 0.001, "jti", time.time() + 60)
    await asyncio.sleep(0.01)
    assert (await store.redeem(token)).outcome == "expired"


async def test_revocations_are_read_incrementally(db):
    store = RevocationStore(db)
    now = time.time()
    await store.add(JTI, "a", now + 60)
    await store.add(SUBJECT, "user-1", now + 60)
    await store.add(JTI, "old", now - 1)
    rows = await store.since(0)
    assert [(r[1], r[2]) for r in rows] == [(JTI, "a"), (SUBJECT, "user-1")]
    assert await store.since(rows[-1][0]) == []
    await store.add(JTI, "b", now + 60)
    assert [r[2] for r in await store.since(rows[-1][0])] == ["b"]
    assert await store.purge() == 1


async def test_audit_events_are_written_in_batches_and_queried(db):
    store = AuditStore(db)
    now = time.time()
    await store.write(
        [
            AuditEvent(now - 100, "login.failed", "denied", "alice", "1.2.3.4", None, "r1"),
            AuditEvent(now - 50, "login.succeeded", "ok", "alice", "1.2.3.4", None, "r2"),
            AuditEvent(now, "key.created", "ok", "k1", None, None, None, {"name": "x"}),
        ]
    )
    newest = await store.query(limit=10)
    assert [e.event for e in newest] == ["key.created", "login.succeeded", "login.failed"]
    assert newest[0].detail == {"name": "x"}
    assert [e.event for e in await store.query(event="login.*")] == [
        "login.succeeded",
        "login.failed",
    ]
    assert len(await store.query(since=now - 60)) == 2
    assert [e.request_id for e in await store.query(actor="alice", limit=1)] == ["r2"]
