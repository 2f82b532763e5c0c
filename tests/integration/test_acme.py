"""Automatic certificates end to end against Pebble: the CA validates HTTP-01 against the
real gateway (`potok run`), the certificate is stored, served over TLS and verified
against Pebble's root, renewed, revoked and replaced, and shared between instances."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from potok.acme.certificate import certificate_id
from potok.acme.database_store import DatabaseStore
from potok.acme.directory_store import DirectoryStore
from potok.acme.manager import CertificateManager
from potok.acme.service import order_lock
from potok.acme.store import CertificateStore
from potok.config.models import GatewayConfig
from potok.identity.config import DatabaseConfig
from potok.identity.database import Database
from tests.support.gateway import GatewayProcess
from tests.support.identity_db import postgres_database
from tests.support.net import free_port
from tests.support.pebble import Pebble
from tests.support.upstream import Upstream


def _name() -> str:
    return f"{uuid.uuid4().hex[:10]}.potok.test"


def _wait(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"{what} not met within {timeout}s")


def _acme(pebble: Pebble, domains: Sequence[Any], **extra: Any) -> dict[str, Any]:
    return {
        "directory_url": pebble.directory_url,
        "ca_bundle": pebble.ca_bundle,
        "email": "ops@potok.test",
        "agree_to_terms": True,
        "domains": list(domains),
        **extra,
    }


def _stored_files(path: Path, names: tuple[str, ...]) -> tuple[bytes, bytes] | None:
    current = path / "certificates" / certificate_id(names) / "current"
    try:
        return (current / "fullchain.pem").read_bytes(), (current / "privkey.pem").read_bytes()
    except FileNotFoundError:
        return None


def _serial(chain: bytes) -> str:
    return format(x509.load_pem_x509_certificate(chain).serial_number, "x")


@contextmanager
def _tls_server(chain: bytes, key: bytes, folder: Path) -> Iterator[int]:
    """A TLS server on loopback serving `chain` and `key` (what the TLS layer will do with
    what the sink receives), answering each handshake with b'ok'."""
    (folder / "serve-chain.pem").write_bytes(chain)
    (folder / "serve-key.pem").write_bytes(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "serve-chain.pem", folder / "serve-key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(raw, server_side=True) as conn:
                    conn.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def _verified_handshake(port: int, name: str, root: bytes) -> x509.Certificate:
    """A TLS client that trusts only Pebble's root and checks `name`."""
    context = ssl.create_default_context(cadata=root.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=name) as conn,
    ):
        assert conn.recv(2) == b"ok"
        der = conn.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)


@pytest.fixture(scope="module")
def pebble() -> Iterator[Pebble]:
    """One Pebble for the module; it validates on `pebble.http_port`, where each test
    starts its gateway (one at a time)."""
    server = Pebble(http_port=free_port())
    yield server
    server.stop()


@pytest.fixture
def gateways() -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(config: dict[str, Any], port: int | None = None, workers: int = 1) -> GatewayProcess:
        gateway = GatewayProcess(config, port=port, workers=workers)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


def test_issued_through_the_gateway_served_and_picked_up_by_a_second_instance(
    pebble: Pebble, gateways: Callable[..., GatewayProcess], upstream: Upstream, tmp_path: Path
) -> None:
    name, alias = _name(), _name()
    storage = tmp_path / "certs"
    config = {
        "services": {"up": {"targets": [upstream.url]}},
        # A host-bound catch-all: the challenge path must still reach the responder.
        "routes": [{"match": {"host": name, "prefix": "/"}, "service": "up"}],
        "acme": _acme(pebble, [[name, alias]], storage="directory", path=str(storage)),
    }
    first = gateways(config, port=pebble.http_port)
    files = _wait(lambda: _stored_files(storage, (name, alias)), what="certificate stored")
    chain, key = files

    # Pebble fetched the answer from this gateway, for both names, with their Host.
    answered = [e for e in first.access_log() if e.get("route") == "potok-acme"]
    assert {e["status"] for e in answered} == {200}
    assert len(answered) >= 2
    assert "certificate issued" in first.stderr() or "certificate issued" in _stdout(first)

    # Metrics: the order, and the expiry of what the worker serves (for an alert).
    metrics = _get_body(first.port, "/api/v1/metrics")
    assert 'certificate_orders_total{result="issued"} 1' in metrics
    leaf_not_after = x509.load_pem_x509_certificate(chain).not_valid_after_utc.timestamp()
    expiry = next(
        line
        for line in metrics.splitlines()
        if line.startswith("certificate_expiry_timestamp_seconds{")
    )
    assert certificate_id((name, alias)) in expiry
    assert float(expiry.rsplit(" ", 1)[1]) == pytest.approx(leaf_not_after)

    # The key: ECDSA P-256, readable by its owner only; the folder closed to others.
    private = serialization.load_pem_private_key(key, None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.curve.name == "secp256r1"
    current = storage / "certificates" / certificate_id((name, alias)) / "current"
    assert stat.S_IMODE((current / "privkey.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(storage.stat().st_mode) == 0o700

    # Served: a client trusting only Pebble's root accepts it for both names.
    root = pebble.roots()
    with _tls_server(chain, key, tmp_path) as port:
        for host in (name, alias):
            leaf = _verified_handshake(port, host, root)
            assert format(leaf.serial_number, "x") == _serial(chain)
        with pytest.raises(ssl.SSLCertVerificationError):
            _verified_handshake(port, "other.potok.test", root)

    # A second instance on the same storage installs the stored certificate, orders nothing.
    second = gateways(config)  # on a port of its own: it never needs a challenge
    _wait(lambda: "certificate installed" in _stdout(second), what="second instance installs")
    assert "certificate ordering" not in _stdout(second)
    assert _serial(chain) in _stdout(second)
    assert _stored_files(storage, (name, alias)) == files


def test_workers_of_one_gateway_order_once_and_all_serve_it(
    pebble: Pebble, gateways: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    """Two workers on one port: both run a manager, the lock lets one order, the other
    installs it from storage; the CA's request may reach either (SO_REUSEPORT)."""
    name = _name()
    storage = tmp_path / "certs"
    config = {"acme": _acme(pebble, [name], storage="directory", path=str(storage))}
    gateway = gateways(config, port=pebble.http_port, workers=2)
    chain, _ = _wait(lambda: _stored_files(storage, (name,)), what="certificate stored")
    _wait(
        lambda: _stdout(gateway).count("certificate installed") >= 2,
        what="both workers install it",
    )
    output = _stdout(gateway)
    assert output.count("certificate issued") == 1
    installed = [
        json.loads(line) for line in output.splitlines() if "certificate installed" in line
    ]
    assert {entry["serial"] for entry in installed} == {_serial(chain)}
    assert len({entry["worker"] for entry in installed}) == 2


def _stdout(gateway: GatewayProcess) -> str:
    return gateway.stdout_path.read_text(errors="replace") + gateway.stderr()


class RecordingSink:
    """A CertificateSink that remembers what it was given."""

    def __init__(self) -> None:
        self.installed: list[tuple[tuple[str, ...], bytes, bytes]] = []
        self._grew = asyncio.Event()

    def install(self, names: Sequence[str], chain_pem: bytes, key_pem: bytes) -> None:
        self.installed.append((tuple(names), chain_pem, key_pem))
        self._grew.set()

    async def wait_for(self, count: int) -> None:
        while len(self.installed) < count:
            self._grew.clear()
            await self._grew.wait()

    @property
    def serials(self) -> list[str]:
        return [_serial(chain) for _, chain, _ in self.installed]


class SharedStorage:
    """One storage several managers (instances) open separately, and the gateway's
    config for it."""

    def __init__(self, kind: str, folder: Path, url: str | None) -> None:
        self.kind = kind
        self.folder = folder
        self.url = url

    def store(self) -> CertificateStore:
        if self.kind in ("directory", "redis"):
            return DirectoryStore(self.folder / "certs")
        assert self.url is not None
        return DatabaseStore(Database(DatabaseConfig(url=self.url)))

    def acme_options(self) -> dict[str, Any]:
        if self.kind == "redis":
            return {"storage": "directory", "path": str(self.folder / "certs"), "lock": "redis"}
        if self.kind == "directory":
            return {"storage": "directory", "path": str(self.folder / "certs")}
        return {"storage": "database"}

    def gateway_config(self, pebble: Pebble, domains: Sequence[Any] = ()) -> dict[str, Any]:
        config: dict[str, Any] = {"acme": _acme(pebble, domains, **self.acme_options())}
        if self.url is not None:
            config["database"] = {"url": self.url}
        return config


@pytest.fixture(params=["postgres", "sqlite", "directory", "redis"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SharedStorage]:
    if request.param == "postgres":
        with postgres_database() as url:  # a database of its own: tables and locks apart
            yield SharedStorage("postgres", tmp_path, url)
    elif request.param == "sqlite":
        yield SharedStorage("sqlite", tmp_path, f"sqlite:///{tmp_path / 'potok.db'}")
    else:  # a directory, locked by flock or (redis) by a lease in the shared Redis
        yield SharedStorage(request.param, tmp_path, None)


def _manager(
    pebble: Pebble, shared: SharedStorage, names: Sequence[Any], sink: RecordingSink, **extra: Any
) -> CertificateManager:
    acme = _acme(pebble, names, **shared.acme_options(), **extra)
    config = GatewayConfig.model_validate(
        {"acme": acme, "database": {"url": shared.url}} if shared.url else {"acme": acme}
    )
    assert config.acme is not None
    store = shared.store()
    manager = CertificateManager(config.acme, store, sinks=[sink])
    manager.use_lock(order_lock(config, store))  # as the worker does: the configured lock
    return manager


async def test_racing_instances_order_once_and_a_newcomer_picks_it_up(
    pebble: Pebble, gateways: Callable[..., GatewayProcess], shared: SharedStorage
) -> None:
    # The gateway orders nothing itself (no domains): it answers challenges from storage,
    # as an instance behind the same load balancer as the ones that order.
    gateway = gateways(shared.gateway_config(pebble), port=pebble.http_port)
    name = _name()
    sinks = [RecordingSink(), RecordingSink()]
    managers = [_manager(pebble, shared, [name], sink) for sink in sinks]
    for manager in managers:
        await manager.store.open()
    gaps: list[float] = []
    ticker = asyncio.get_running_loop().create_task(_tick(gaps))
    try:
        await asyncio.gather(*(manager.check() for manager in managers))
        ticker.cancel()
        # The order (the acme library sleeps a second between polls) ran in threads: the
        # loop kept its 10 ms ticks (bound generous for a loaded machine).
        assert gaps and max(gaps) < 1.0
        assert sum(manager.orders for manager in managers) == 1  # the lock: one order
        assert sinks[0].serials == sinks[1].serials  # both serve the one certificate
        assert len(sinks[0].serials) == 1
        answered = [e for e in gateway.access_log() if e.get("route") == "potok-acme"]
        assert [e["status"] for e in answered] and {e["status"] for e in answered} == {200}

        newcomer_sink = RecordingSink()
        newcomer = _manager(pebble, shared, [name], newcomer_sink)
        await newcomer.store.open()
        await newcomer.check()
        assert newcomer.orders == 0
        assert newcomer_sink.serials == sinks[0].serials
        await newcomer.stop()
        await newcomer.store.close()
    finally:
        for manager in managers:
            await manager.stop()
            await manager.store.close()


async def _tick(gaps: list[float]) -> None:
    loop = asyncio.get_running_loop()
    last = loop.time()
    while True:
        await asyncio.sleep(0.01)
        now = loop.time()
        gaps.append(now - last)
        last = now


@pytest.fixture
def short_lived(tmp_path: Path) -> Iterator[tuple[Pebble, int]]:
    """A Pebble issuing certificates valid for 12 seconds, and the port it validates on."""
    port = free_port()
    server = Pebble(http_port=port, validity=12)
    yield server, port
    server.stop()


async def test_renewed_at_two_thirds_of_its_life(
    short_lived: tuple[Pebble, int], gateways: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    pebble, port = short_lived
    shared = SharedStorage("directory", tmp_path, None)
    gateways(shared.gateway_config(pebble), port=port)
    name = _name()
    sink = RecordingSink()
    manager = _manager(pebble, shared, [name], sink)
    await manager.store.open()
    manager.start()
    try:
        async with asyncio.timeout(60):
            await sink.wait_for(2)
        assert manager.orders >= 2
        first = x509.load_pem_x509_certificate(sink.installed[0][1])
        lifetime = (first.not_valid_after_utc - first.not_valid_before_utc).total_seconds()
        renew_point = first.not_valid_before_utc.timestamp() + lifetime * 2 / 3
        second_at = time.time()
        # Renewed after two thirds of the first one's life, well before it ended.
        assert renew_point - 0.5 <= second_at
        assert second_at < first.not_valid_after_utc.timestamp()
        assert len(set(sink.serials)) >= 2
        stored = await manager.store.load(certificate_id((name,)))
        assert stored is not None and stored.serial == sink.serials[-1]
    finally:
        await manager.stop()


def _potok(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "potok", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ,
        check=False,
    )


def test_certs_cli_list_renew_revoke_and_the_gateway_replaces_a_revoked_one(
    pebble: Pebble, gateways: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    name = _name()
    storage = tmp_path / "certs"
    config = {"acme": _acme(pebble, [name], storage="directory", path=str(storage))}
    gateway = gateways(config, port=pebble.http_port)
    chain, _ = _wait(lambda: _stored_files(storage, (name,)), what="certificate stored")
    first = _serial(chain)
    config_file = str(gateway.config_path)

    listed = _potok("certs", "list", "--config", config_file)
    assert listed.returncode == 0, listed.stderr
    assert name in listed.stdout and first in listed.stdout and "valid" in listed.stdout

    # renew from the command line: the running gateway answers the challenge from storage.
    renewed = _potok("certs", "renew", name, "--config", config_file)
    assert renewed.returncode == 0, renewed.stderr
    second = _serial(_stored_files(storage, (name,))[0])  # type: ignore[index]
    assert second != first and second in renewed.stdout
    shared_answers = [
        line for line in _stdout(gateway).splitlines() if "acme challenge answered" in line
    ]
    assert any('"shared": true' in line for line in shared_answers)

    revoked = _potok("certs", "revoke", name, "--reason", "key-compromise", "--config", config_file)
    assert revoked.returncode == 0, revoked.stderr
    assert pebble.status(second)["Status"] == "Revoked"
    meta_file = storage / "certificates" / certificate_id((name,)) / "current" / "meta.json"
    assert json.loads(meta_file.read_text())["revoked_at"] is not None

    # SIGHUP makes the gateway look at storage now: it orders the replacement itself.
    gateway.signal(__import__("signal").SIGHUP)
    third = _wait(
        lambda: (s := _serial(_stored_files(storage, (name,))[0])) != second and s,  # type: ignore[index]
        what="revoked certificate replaced",
    )
    assert pebble.status(third)["Status"] == "Valid"
    assert json.loads(meta_file.read_text())["revoked_at"] is None

    # A storage path that does not exist is said so, not shown as empty.
    elsewhere = tmp_path / "other.yaml"
    moved = {"acme": {**config["acme"], "path": str(tmp_path / "typo")}}
    elsewhere.write_text(json.dumps(moved))
    missing = _potok("certs", "list", "--config", str(elsewhere))
    assert missing.returncode == 1 and "no certificate storage at" in missing.stderr
    assert not (tmp_path / "typo").exists()


def test_ca_down_retried_with_backoff_while_the_gateway_keeps_serving(
    gateways: Callable[..., GatewayProcess], upstream: Upstream, tmp_path: Path
) -> None:
    import trustme

    acme_port = free_port()  # nothing listens here yet: the CA is down
    bundle = tmp_path / "acme-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    name = _name()
    storage = tmp_path / "certs"
    config = {
        "services": {"up": {"targets": [upstream.url]}},
        "routes": [{"match": {"prefix": "/"}, "service": "up"}],
        "acme": {
            "directory_url": f"https://127.0.0.1:{acme_port}/dir",
            "ca_bundle": str(bundle),
            "agree_to_terms": True,
            "domains": [name],
            "storage": "directory",
            "path": str(storage),
            "retry": {"initial": "400ms", "max": "2s"},
        },
    }
    gateway = gateways(config)
    _wait(lambda: _stdout(gateway).count("certificate order failed") >= 3, what="three failures")
    failures = [
        json.loads(line)
        for line in _stdout(gateway).splitlines()
        if "certificate order failed" in line
    ]
    waits = [entry["retry_in_s"] for entry in failures[:3]]
    assert waits[0] < waits[1] < waits[2]  # doubling (with +-10 % jitter)
    assert 0.3 <= waits[0] <= 0.5 and waits[2] <= 2.2
    assert "ConnectionError" in failures[0]["error"]

    # Meanwhile the gateway serves as usual.
    for _ in range(5):
        status = _get(gateway.port, "/hello")
        assert status == 200

    # The CA comes up (on the port the config names): the next attempt succeeds.
    pebble = Pebble(http_port=gateway.port, listen_port=acme_port)
    try:
        bundle.write_bytes(Path(pebble.ca_bundle).read_bytes())
        _wait(lambda: _stored_files(storage, (name,)), timeout=30, what="certificate after outage")
    finally:
        pebble.stop()


def _get(port: int, path: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        head = sock.recv(65536)
    return int(head.split(b" ", 2)[1])


async def test_a_ca_that_lost_the_account_gets_a_new_one(
    short_lived: tuple[Pebble, int], gateways: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    """Pebble keeps nothing across a restart (as a CA that purged an account): the stored
    account key registers again instead of failing every order from then on."""
    pebble, port = short_lived
    shared = SharedStorage("directory", tmp_path, None)
    gateways(shared.gateway_config(pebble), port=port)
    name = _name()
    manager = _manager(pebble, shared, [name], RecordingSink())
    await manager.store.open()
    try:
        await manager.obtain((name,))
        account = await manager.store.load_account(pebble.directory_url)
        assert account is not None and account.uri is not None
        await manager.stop()
        await asyncio.to_thread(pebble.stop_pebble)
        await asyncio.to_thread(pebble.start)
        renewed = await manager.obtain((name,), force=True)
        assert manager.orders == 2 and renewed.names == (name,)
        again = await manager.store.load_account(pebble.directory_url)
        assert again is not None and again.key_json == account.key_json  # the key is kept
        assert again.uri != account.uri  # registered anew
    finally:
        await manager.stop()


def _get_body(port: int, path: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks).partition(b"\r\n\r\n")[2].decode(errors="replace")
