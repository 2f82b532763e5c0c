"""The ACME layer's parts without a CA: config checks, the challenge path, renewal times,
the directory storage's files, the order locks (on real PostgreSQL and Redis) and the
reserved challenge route."""

from __future__ import annotations

import asyncio
import datetime
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import trustme
from pydantic import ValidationError
from redis.asyncio import Redis

from potok.acme.certificate import StoredCertificate, new_private_key
from potok.acme.config import AcmeConfig
from potok.acme.directory_store import DirectoryStore
from potok.acme.lock import FileLock, LockBusy, PostgresAdvisoryLock, RedisLock, holding
from potok.acme.manager import CertificateManager
from potok.acme.responder import MAX_LOOKUPS, ChallengeResponder, token_of
from potok.config.models import GatewayConfig
from potok.identity.config import DatabaseConfig
from potok.identity.database import Database
from potok.routing.table import RouteMatch
from potok.runtime import Runtime
from tests.support.identity_db import postgres_database
from tests.support.net import free_port

# Config -------------------------------------------------------------------------------------


def _acme(**fields: Any) -> AcmeConfig:
    return AcmeConfig(**{"agree_to_terms": True, **fields})


def test_domains_take_names_or_groups_and_lower_case_them() -> None:
    config = _acme(domains=["A.Example.com", ["b.example.com", "www.B.example.com."]])
    assert config.domains == (("a.example.com",), ("b.example.com", "www.b.example.com"))
    assert config.renew_at == pytest.approx(2 / 3)
    assert config.storage == "database"


@pytest.mark.parametrize(
    ("domains", "message"),
    [
        (["*.example.com"], "wildcard"),
        (["127.0.0.1"], "not an IP address"),
        (["localhost"], "fully qualified"),
        (["bad_name.example.com"], "fully qualified"),
        ([["a.example.com"], ["a.example.com"]], "two certificates"),
        ([[]], "at least one name"),
    ],
)
def test_bad_domains_are_refused_naming_the_field(domains: list[Any], message: str) -> None:
    with pytest.raises(ValidationError) as error:
        _acme(domains=domains)
    assert "domains" in str(error.value) and message in str(error.value)


def test_terms_must_be_agreed_and_directory_storage_needs_a_path() -> None:
    with pytest.raises(ValidationError, match="agree_to_terms"):
        AcmeConfig(domains=["a.example.com"])
    with pytest.raises(ValidationError, match="path"):
        _acme(storage="directory")
    with pytest.raises(ValidationError, match="https://"):
        _acme(directory_url="http://ca.example/dir")
    with pytest.raises(ValidationError, match="renew_at"):
        _acme(renew_at=1.0)
    # In the whole config, under its key; relative paths beside the config file.
    config = GatewayConfig.model_validate(
        {"acme": {"storage": "directory", "path": "certs"}},
        context={"config_dir": Path("/etc/potok")},
    )
    assert config.acme is not None and config.acme.path == "/etc/potok/certs"


# The challenge path -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "token"),
    [
        (b"/.well-known/acme-challenge/abc_DEF-123", "abc_DEF-123"),
        (b"/.well-known/acme-challenge/", None),
        (b"/.well-known/acme-challenge/../../etc/passwd", None),
        (b"/.well-known/acme-challenge/a%2Fb", None),
        (b"/.well-known/acme-challenge/a.b", None),
        (b"/.well-known/acme-challenge/" + b"a" * 129, None),
        (b"/.well-known/acme-challengeX/abc", None),
    ],
)
def test_only_base64url_tokens_are_looked_up(path: bytes, token: str | None) -> None:
    assert token_of(path) == token


def _runtime_with_challenges(routes: list[dict[str, Any]]) -> Runtime:
    config = GatewayConfig.model_validate(
        {"services": {"up": {"targets": ["http://127.0.0.1:1"]}}, "routes": routes}
    )
    return Runtime(config, acme_terminal=lambda exchange: None)


def test_the_challenge_route_beats_host_bound_user_routes_and_nothing_else() -> None:
    runtime = _runtime_with_challenges(
        [
            {"match": {"host": "a.example.com", "prefix": "/"}, "service": "up"},
            {"match": {"prefix": "/.well-known"}, "service": "up", "name": "wk"},
        ]
    )
    path = b"/.well-known/acme-challenge/tok"
    match = runtime.table.match(b"GET", path, "a.example.com")
    assert isinstance(match, RouteMatch) and match.target.name == "potok-acme"
    assert match.target.pipeline.names == ()  # no policy: rate limits, IP filters, auth
    other = runtime.table.match(b"GET", b"/.well-known/security.txt", "a.example.com")
    assert isinstance(other, RouteMatch) and other.target.name == "up-0"
    unbound = runtime.table.match(b"GET", b"/.well-known/security.txt", "b.example.com")
    assert isinstance(unbound, RouteMatch) and unbound.target.name == "wk"


def test_without_acme_the_challenge_path_is_an_ordinary_path() -> None:
    config = GatewayConfig.model_validate(
        {
            "services": {"up": {"targets": ["http://127.0.0.1:1"]}},
            "routes": [{"match": {"prefix": "/"}, "service": "up"}],
        }
    )
    match = Runtime(config).table.match(b"GET", b"/.well-known/acme-challenge/tok", "")
    assert isinstance(match, RouteMatch) and match.target.name == "up-0"


# Renewal times ------------------------------------------------------------------------------


def _certificate(days: int, names: tuple[str, ...] = ("a.example.com",)) -> StoredCertificate:
    ca = trustme.CA()
    leaf = ca.issue_cert(
        *names, not_after=datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)
    )
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    return StoredCertificate.from_pem(names, chain, leaf.private_key_pem.bytes(), time.time())


def test_due_at_two_thirds_of_the_lifetime_or_when_revoked() -> None:
    cert = _certificate(days=90)
    lifetime = cert.not_after - cert.not_before
    renew = cert.renew_after(2 / 3)
    assert renew == pytest.approx(cert.not_before + lifetime * 2 / 3)
    assert not cert.due(2 / 3, now=renew - 1)
    assert cert.due(2 / 3, now=renew + 1)
    assert cert.revoked(time.time()).due(2 / 3, now=cert.not_before)


# Directory storage --------------------------------------------------------------------------


async def test_directory_storage_files_modes_and_versions(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "certs")
    await store.open()
    assert stat.S_IMODE((tmp_path / "certs").stat().st_mode) == 0o700
    first = _certificate(days=90)
    await store.save(first)
    loaded = await store.load(first.id)
    assert loaded == first
    folder = tmp_path / "certs" / "certificates" / first.id
    assert stat.S_IMODE((folder / "current" / "privkey.pem").stat().st_mode) == 0o600
    # A renewal swaps `current` and keeps one earlier version, no more.
    second, third = _certificate(days=90), _certificate(days=90)
    await store.save(second)
    await store.save(third)
    assert (await store.load(first.id)) == third
    assert (folder / "current").resolve().name == third.serial
    versions = {p.name for p in folder.iterdir() if p.is_dir() and not p.is_symlink()}
    assert versions == {second.serial, third.serial}
    assert not [p for p in folder.rglob("*.tmp")]  # nothing half-written left behind
    revoked = third.revoked(time.time())
    await store.save(revoked)
    assert (await store.load(first.id)) == revoked
    assert [c.serial for c in await store.all()] == [third.serial]


async def test_directory_challenges_expire(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    await store.open()
    await store.publish_challenge("tok", "tok.thumb", time.time() + 60)
    await store.publish_challenge("old", "old.thumb", time.time() - 1)
    assert await store.challenge("tok") == "tok.thumb"
    assert await store.challenge("old") is None
    await store.withdraw_challenge("tok")
    assert await store.challenge("tok") is None


def test_keys_are_ecdsa_p256() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(new_private_key(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"


# Order locks --------------------------------------------------------------------------------


async def _exclusive(first: Any, second: Any) -> None:
    """`first` taken keeps `second` out until released; then `second` gets it."""
    assert await first.try_acquire()
    assert not await second.try_acquire()
    with pytest.raises(LockBusy):
        async with holding(second, wait=0.3):
            pass
    await first.release()
    async with holding(second, wait=2):
        assert not await first.try_acquire()
    assert await first.try_acquire()
    await first.release()


async def test_file_lock_is_exclusive_even_within_one_process(tmp_path: Path) -> None:
    await _exclusive(FileLock(tmp_path / "lock"), FileLock(tmp_path / "lock"))


async def test_postgres_advisory_lock_is_exclusive_across_sessions() -> None:
    with postgres_database() as url:
        databases = [Database(DatabaseConfig(url=url)) for _ in range(2)]
        try:
            await _exclusive(*(PostgresAdvisoryLock(db.engine) for db in databases))
        finally:
            for db in databases:
                await db.close()


async def test_redis_lock_is_released_only_by_its_holder_and_kept_alive() -> None:
    client = Redis.from_url("redis://127.0.0.1:6379/0")
    key = f"potok-test:acme-lock:{uuid.uuid4().hex}"
    try:
        await _exclusive(RedisLock(client, key), RedisLock(client, key))
        # A short lease is extended while held: another instance stays out past its ttl.
        holder = RedisLock(client, key, ttl=0.3)
        assert await holder.try_acquire()
        await asyncio.sleep(0.7)
        assert not await RedisLock(client, key).try_acquire()
        # A holder whose lease expired (it stalled) cannot delete its successor's lease.
        holder._keeper.cancel()  # type: ignore[union-attr]
        await client.pexpire(key, 1)
        await asyncio.sleep(0.05)
        successor = RedisLock(client, key)
        assert await successor.try_acquire()
        await holder.release()
        assert await client.get(key) is not None
        await successor.release()
        assert await client.get(key) is None
    finally:
        await client.delete(key)
        await client.aclose()


# The manager without a CA -------------------------------------------------------------------


class FlakySink:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.installed: list[tuple[str, ...]] = []

    def install(self, names: Any, chain_pem: bytes, key_pem: bytes) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ValueError("not now")
        self.installed.append(tuple(names))


async def test_stored_certificate_installed_once_and_again_after_a_sink_refused(
    tmp_path: Path,
) -> None:
    store = DirectoryStore(tmp_path)
    await store.open()
    cert = _certificate(days=90)
    await store.save(cert)
    sink = FlakySink(failures=1)
    manager = CertificateManager(_acme(domains=["a.example.com"]), store, sinks=[sink])
    await manager.check()
    assert sink.installed == []
    delay = await manager.check()
    assert sink.installed == [("a.example.com",)]
    await manager.check()
    assert sink.calls == 2  # not again for the same serial
    assert manager.orders == 0
    assert 0 < delay <= manager.config.check_interval


async def test_failed_orders_back_off_doubling_up_to_the_maximum(tmp_path: Path) -> None:
    now = [1000.0]
    store = DirectoryStore(tmp_path)
    await store.open()
    dead = free_port()  # nothing listens: every order fails at once (connection refused)
    config = _acme(
        domains=["a.example.com"],
        directory_url=f"https://127.0.0.1:{dead}/dir",
        retry={"initial": 10, "max": 40},
    )
    manager = CertificateManager(config, store, clock=lambda: now[0])
    waits = []
    for _ in range(5):
        waits.append(await manager.check())
        now[0] += waits[-1]
    assert [round(w / 10) for w in waits] == [1, 2, 4, 4, 4]  # +-10 % jitter
    # Before the retry time nothing is attempted.
    now[0] -= 1
    failures = manager.slots[0].failures
    assert await manager.check() > 0 and manager.slots[0].failures == failures
    await manager.stop()


def test_a_user_route_under_the_challenge_path_is_refused_with_acme() -> None:
    from potok.config.loader import ConfigError, load_config_text

    text = """
services: {up: {targets: ["http://127.0.0.1:1"]}}
routes:
  - {match: {prefix: /.well-known/acme-challenge/x}, service: up}
  - {match: {prefix: /.well-known}, service: up, name: potok-acme}
"""
    with pytest.raises(ConfigError) as error:
        load_config_text(text + "acme: {}\n")
    problems = dict(error.value.problems)
    assert "never reached" in problems["routes[0].match"]
    assert "reserved" in problems["routes[1].name"]
    load_config_text(text.replace("name: potok-acme", "name: wk"))  # without acme: fine


class _FakeExchange:
    def __init__(self, path: bytes) -> None:
        self.path = path
        self.client_ip = "192.0.2.1"
        self.answers: list[tuple[int, bytes]] = []

    def respond(self, status: int, body: bytes, content_type: bytes, headers: Any = ()) -> None:
        self.answers.append((status, body))

    def problem(self, status: int, detail: str | None = None, **kwargs: Any) -> None:
        self.answers.append((status, b""))

    def is_current(self) -> bool:
        return True


class _SlowStore:
    """A storage whose lookups hang (a database under load)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.lookups = 0

    async def challenge(self, token: str) -> str | None:
        self.lookups += 1
        await self.release.wait()
        return None


async def test_made_up_tokens_cannot_pile_up_storage_lookups() -> None:
    store = _SlowStore()
    responder = ChallengeResponder(store)  # type: ignore[arg-type]
    responder.publish("known", "known.thumb", time.time() + 60)
    flood = [_FakeExchange(f"/.well-known/acme-challenge/t{i}".encode()) for i in range(200)]
    for exchange in flood:
        responder(exchange)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert store.lookups == MAX_LOOKUPS  # the rest refused at once, not queued
    refused = [e for e in flood if e.answers]
    assert len(refused) == 200 - MAX_LOOKUPS and {e.answers[0][0] for e in refused} == {503}
    # A token this process published is answered from memory even under the flood.
    known = _FakeExchange(b"/.well-known/acme-challenge/known")
    responder(known)  # type: ignore[arg-type]
    assert known.answers == [(200, b"known.thumb")]
    bad = _FakeExchange(b"/.well-known/acme-challenge/..%2Faccounts")
    responder(bad)  # type: ignore[arg-type]
    assert bad.answers[0][0] == 404 and store.lookups == MAX_LOOKUPS
    store.release.set()
    await asyncio.sleep(0.05)
    assert all(e.answers == [(404, b"")] for e in flood if e not in refused)
