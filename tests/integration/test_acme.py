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

from potok.acme.certificate import StoredCertificate, certificate_id
from potok.acme.config import AcmeConfig
from potok.acme.database_store import DatabaseStore
from potok.acme.directory_store import DirectoryStore
from potok.acme.manager import CertificateManager
from potok.acme.store import CertificateStore
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

    def start(config: dict[str, Any], port: int | None = None) -> GatewayProcess:
        gateway = GatewayProcess(config, port=port)
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


def _stdout(gateway: GatewayProcess) -> str:
    return gateway.stdout_path.read_text(errors="replace") + gateway.stderr()
