"""The identity layer's pure parts (the login guard has test_login_guard.py): denylist, audit buffer, JWKS rate limit, config."""

from __future__ import annotations

import asyncio

import jwt
import pytest

from potok.config.loader import ConfigError, load_config_text
from potok.identity.audit import AuditLog
from potok.identity.config import AuditConfig, PasswordHashingConfig, TokenServiceConfig
from potok.identity.jwks import JwksKeySet
from potok.identity.jwt_config import JwksConfig
from potok.identity.key_checks import KeyMaterialError, check_hmac_secret
from potok.identity.keys import signing_key
from potok.identity.passwords import PasswordError, PasswordHasher
from potok.identity.revocation import JTI, SUBJECT, Denylist, revocation_time
from potok.identity.secrets import new_key
from potok.identity.token_service import TokenIssuer
from potok.identity.users import User

SECRET = "identity-parts-secret-0123456789abcdefghij"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_denylist():
    clock = Clock()
    denylist = Denylist(clock)
    denylist.add(JTI, "t1", clock.now, clock.now + 60)
    denylist.add(SUBJECT, "u1", clock.now, clock.now + 3600)
    assert denylist.is_revoked("t1", "anyone", 0)
    assert not denylist.is_revoked("t2", "anyone", 0)
    assert denylist.is_revoked("t2", "u1", clock.now - 5)  # issued before the revocation
    assert not denylist.is_revoked("t2", "u1", clock.now + 5)  # a later login
    clock.now += 61
    denylist.purge()
    assert not denylist.is_revoked("t1", "anyone", 0)
    assert len(denylist) == 1


async def test_audit_buffer_is_bounded_and_never_blocks():
    written: list[int] = []

    class Store:
        async def write(self, events):
            written.append(len(events))

    log = AuditLog(
        AuditConfig(queue_size=100, batch_size=40, flush_interval=60, log=False),
        Store(),  # type: ignore[arg-type]
    )
    for _ in range(10_000):
        log.record("request.denied", "401", ip="1.2.3.4")
    assert log.pending == 100 and log.dropped == 9_900
    await log.flush()
    assert written == [40, 40, 20]  # three writes for the whole flood
    log.start()
    for _ in range(40):
        log.record("request.denied", "401")
    await asyncio.sleep(0.05)  # a full batch wakes the writer before the interval
    assert written[-1] == 40
    await log.close()


async def test_jwks_refresh_is_single_flight_and_rate_limited(monkeypatch):
    calls = 0

    def fake_fetch(url: str, timeout: float) -> bytes:
        nonlocal calls
        calls += 1
        return b'{"keys": []}'

    monkeypatch.setattr("potok.identity.jwks._fetch", fake_fetch)
    clock = Clock()
    key_set = JwksKeySet(JwksConfig(url="http://idp/jwks", min_refresh_interval=30), clock)
    results = await asyncio.gather(*(key_set.key_for(f"kid-{i}") for i in range(1000)))
    assert results == [None] * 1000
    assert calls == 1
    await key_set.key_for("another")
    assert calls == 1
    clock.now += 31
    await key_set.key_for("another")
    assert calls == 2


async def test_passwords():
    hasher = PasswordHasher(PasswordHashingConfig(time_cost=1, memory_kib=64, parallelism=1))
    stored = await hasher.hash("a good password")
    assert stored.startswith("$argon2id$")
    assert await hasher.verify(stored, "a good password")
    assert not await hasher.verify(stored, "a bad password")
    assert not await hasher.verify(None, "a good password")  # dummy hash, same work
    assert not await hasher.verify("not a hash", "x")
    with pytest.raises(PasswordError):
        await hasher.hash("short")
    assert not PasswordHasher(PasswordHashingConfig()).needs_rehash(
        PasswordHasher(PasswordHashingConfig()).hash_now("strong default params")
    )
    assert PasswordHasher(PasswordHashingConfig()).needs_rehash(stored)


BASE = """
services: {up: {targets: ["http://127.0.0.1:9"]}}
"""


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as error:
        load_config_text(BASE + text, {})
    return error.value.problems


def test_config_names_the_bad_field():
    found = problems("auth: {token_service: {enabled: true}}")
    assert found[0][0] == "auth.token_service"
    found = problems(
        "auth: {token_service: {enabled: true, signing: {algorithm: HS256, secret: short}}}"
    )
    assert found[0][0] == "auth.token_service.signing"
    assert "32 bytes" in found[0][1]
    found = problems(
        "routes: [{match: {prefix: /a}, service: up, policies: {auth_jwt: {issuers: "
        "[{issuer: x, keys: [{algorithm: RS256, secret: " + "x" * 40 + "}]}]}}}]"
    )
    assert found[0][0] == "routes[0].policies.auth_jwt.issuers[0].keys[0]"
    found = problems(
        "routes: [{match: {prefix: /a}, service: up, policies: {authorize: "
        "{tenant: {param: org_id}}}}]"
    )
    assert "no path parameter {org_id}" in found[0][1]
    found = problems(
        "routes: [{match: {prefix: /a}, service: up, policies: {auth_jwt: {token_service: true}}}]"
    )
    assert found[0][1].startswith("routes[0].policies.auth_jwt.token_service:")
    found = problems("routes: [{match: {prefix: /a}, service: up, policies: {auth_jwt: {}}}]")
    assert "token_service" in found[0][1]
    found = problems("database: {url: 'mysql://x'}")
    assert found[0][0] == "database.url"
    found = problems("auth: {revocation: {backend: redis}}")
    assert found[0][1].startswith("auth.revocation.redis_url: backend 'redis' needs")


def test_revocation_redis_comes_from_the_shared_section_unless_overridden():
    from potok.identity.revocation import Revocations

    def revocations(text: str) -> Revocations:
        config = load_config_text(BASE + text, {})
        return Revocations(config.auth.revocation, None, Denylist(), config.redis)

    shared = revocations(
        "redis: {url: 'redis://10.0.0.5:6380/2', key_prefix: 'staging:'}\n"
        "auth: {revocation: {backend: redis}}"
    )
    assert shared.redis_url == "redis://10.0.0.5:6380/2"
    assert shared.channel == "staging:revoked:events"
    override = revocations(
        "redis: {url: 'redis://10.0.0.5:6380/2'}\n"
        "auth: {revocation: {backend: redis, redis_url: 'redis://10.0.0.9/0', "
        "redis_prefix: 'own:'}}"
    )
    assert override.redis_url == "redis://10.0.0.9/0"
    assert override.channel == "own:events"
    alone = revocations("auth: {revocation: {backend: redis, redis_url: 'redis://10.0.0.9/0'}}")
    assert alone.redis_url == "redis://10.0.0.9/0"
    assert alone.channel == "potok:revoked:events"  # what it always was


async def test_redis_backend_spreads_a_revocation_at_once():
    """Two gateways (no shared database poll within the test's time): one revokes, the other
    learns it through Redis."""
    import secrets as random

    from potok.identity.config import RevocationConfig
    from potok.identity.revocation import Revocations

    config = RevocationConfig(
        backend="redis",
        redis_url="redis://127.0.0.1:6379/0",
        redis_prefix=f"potok-test-{random.token_hex(4)}:",
        poll_interval=3600,
    )
    first = Revocations(config, None, Denylist())
    second = Revocations(config, None, Denylist())
    await first.start()
    await second.start()
    try:
        await asyncio.sleep(0.2)  # both subscribed
        await first.revoke(JTI, "stolen-token", 4_000_000_000.0)
        await first.revoke(SUBJECT, "user-9", 4_000_000_000.0)
        for _ in range(100):
            if second.denylist.is_revoked(None, "user-9", 1.0):
                break
            await asyncio.sleep(0.02)
        assert second.denylist.is_revoked("stolen-token", "x", 0)
        assert second.denylist.is_revoked(None, "user-9", 1.0)
    finally:
        await first.close()
        await second.close()


def test_a_subject_revocation_cuts_at_whole_seconds():
    denylist = Denylist(clock=lambda: 0.0)
    cut = revocation_time(SUBJECT, 1000.4)
    assert cut == 1001.0 and revocation_time(JTI, 1000.4) == 1000.4
    denylist.add(SUBJECT, "u1", cut, 5000.0)
    assert denylist.is_revoked(None, "u1", 1000.0)  # issued in that second, before it
    assert not denylist.is_revoked(None, "u1", 1001.0)  # issued at the cut: after it
    assert denylist.subject_cut("u1") == 1001.0 and denylist.subject_cut("u2") is None


def test_the_token_service_issues_after_the_users_latest_cut():
    config = TokenServiceConfig(enabled=True, signing={"algorithm": "HS256", "secret": SECRET})
    issuer = TokenIssuer(config, signing_key(config.signing))
    user = User("u1", "alice", "h", (), None, False, 0.0, 0.0)
    token, _, _ = issuer.access_token(user, now=1000.4, revoked_until=1001.0)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iat"] == 1001 and claims["nbf"] == 1000
    plain, _, _ = issuer.access_token(user, now=1000.4, revoked_until=900.0)
    assert jwt.decode(plain, options={"verify_signature": False})["iat"] == 1000


@pytest.mark.parametrize(
    ("algorithm", "secret", "problem"),
    [
        ("HS256", b"0" * 32, "trivially weak"),
        ("HS256", b"\x00" * 64, "trivially weak"),
        ("HS256", b"abcdefgh" * 4, "trivially weak"),
        ("HS256", b"abcdefg" * 4, "at least 32 bytes"),
        ("HS512", b"a-fine-secret-0123456789abcdefghijklmnop", "at least 64 bytes"),
    ],
)
def test_weak_hmac_secrets(algorithm, secret, problem):
    with pytest.raises(KeyMaterialError, match=problem):
        check_hmac_secret(algorithm, secret)


def test_a_random_secret_is_fine():
    check_hmac_secret("HS512", new_key().encode())
