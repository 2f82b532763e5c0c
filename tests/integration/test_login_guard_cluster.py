"""Login brute-force protection across workers and instances, through the real gateway.

Many concurrent connections hammer one username (or, from one client IP, many
usernames) with wrong passwords; however the attempts spread over the workers
of one gateway (`--workers 2`, SQLite) or over two gateways sharing a
PostgreSQL database, exactly `max_failures_per_*` of them are answered 401 and
the rest 429, and the right password is refused until the lock-out ends.

Clients connect from different loopback addresses (127.0.0.x), so each test
has client IPs of its own.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.identity_db import postgres_database
from tests.support.identity_gateway import add_user, auth_config, public_pem, rsa_private
from tests.support.net import Response, ResponseReader, build_request

PASSWORD = "cluster tests password"
PER_USER = 5
PER_IP = 8
LOCKOUT = 6.0
HAMMER = 40  # concurrent attempts, each on its own connection


def guarded_config(upstream_url: str, database_url: str) -> dict[str, Any]:
    config = auth_config(upstream_url, database_url, public_pem(rsa_private()))
    config["auth"]["login_protection"] = {
        "max_failures_per_user": PER_USER,
        "max_failures_per_ip": PER_IP,
        "lockout": f"{LOCKOUT:g}s",
    }
    return config


def start(config: dict[str, Any], workers: int) -> GatewayProcess:
    gateway = GatewayProcess(config, workers=workers)
    # The port answers once one worker listens; wait for all of them, so the kernel
    # (SO_REUSEPORT) spreads the connections over every worker.
    gateway.wait_for(lambda: gateway.stderr().count('"event": "listening"') >= workers, 20)
    return gateway


def login(port: int, client_ip: str, username: str, password: str) -> Response:
    """POST /api/v1/auth/login on a fresh connection from `client_ip` (a loopback address)."""
    import json
    import socket

    body = json.dumps({"username": username, "password": password}).encode()
    headers = {"Content-Type": "application/json"}
    with socket.create_connection(
        ("127.0.0.1", port), timeout=30, source_address=(client_ip, 0)
    ) as sock:
        sock.sendall(build_request("POST", "/api/v1/auth/login", headers, body))
        return ResponseReader(sock).read()


def hammer(ports: list[int], client_ip: str, usernames: list[str]) -> Counter[int]:
    """One wrong password per username, all at once, spread over `ports`; status counts."""
    start_line = threading.Barrier(len(usernames))

    def attempt(i: int) -> int:
        start_line.wait()
        return login(ports[i % len(ports)], client_ip, usernames[i], "wrong password!").status

    with ThreadPoolExecutor(len(usernames)) as pool:
        return Counter(pool.map(attempt, range(len(usernames))))


def refused_until_unlocked(port: int, client_ip: str, username: str) -> None:
    """The right password: 429 (with Retry-After) now, 200 once the lock-out has ended."""
    locked = login(port, client_ip, username, PASSWORD)
    assert locked.status == 429, locked
    retry_after = int(locked.header("Retry-After") or 0)
    assert 1 <= retry_after <= LOCKOUT
    time.sleep(retry_after / 2)
    assert login(port, client_ip, username, PASSWORD).status == 429
    deadline = time.monotonic() + retry_after / 2 + 2
    while (status := login(port, client_ip, username, PASSWORD).status) == 429:
        assert time.monotonic() < deadline, "still locked after the lock-out"
        time.sleep(0.25)
    assert status == 200


@pytest.fixture(scope="module")
def sqlite_url() -> str:
    return f"sqlite:///{tempfile.mkdtemp(prefix='potok-guard-')}/identity.db"


@pytest.fixture(scope="module")
def two_workers(upstream, sqlite_url) -> Iterator[GatewayProcess]:
    for name in ("target", "bystander"):
        add_user(sqlite_url, name, PASSWORD)
    gateway = start(guarded_config(upstream.url, sqlite_url), workers=2)
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def two_instances(upstream) -> Iterator[list[GatewayProcess]]:
    with postgres_database() as url:
        for name in ("target", "bystander"):
            add_user(url, name, PASSWORD)
        gateways = [start(guarded_config(upstream.url, url), workers=1) for _ in range(2)]
        yield gateways
        for gateway in gateways:
            gateway.stop()


def test_two_workers_lock_a_username_after_exactly_the_limit(two_workers):
    statuses = hammer([two_workers.port], "127.0.0.2", ["target"] * HAMMER)
    assert statuses == {401: PER_USER, 429: HAMMER - PER_USER}
    # Locked for every client IP, right password or not.
    assert login(two_workers.port, "127.0.0.3", "target", "wrong password!").status == 429
    refused_until_unlocked(two_workers.port, "127.0.0.3", "target")


def test_two_workers_lock_an_ip_after_exactly_the_limit(two_workers):
    names = [f"nobody-{i}" for i in range(HAMMER)]  # unknown users count like real ones
    statuses = hammer([two_workers.port], "127.0.0.4", names)
    assert statuses == {401: PER_IP, 429: HAMMER - PER_IP}
    assert login(two_workers.port, "127.0.0.5", "bystander", PASSWORD).status == 200
    refused_until_unlocked(two_workers.port, "127.0.0.4", "bystander")


def test_two_instances_on_postgresql_share_the_username_count(two_instances):
    ports = [gateway.port for gateway in two_instances]
    statuses = hammer(ports, "127.0.0.6", ["target"] * HAMMER)
    assert statuses == {401: PER_USER, 429: HAMMER - PER_USER}
    for port in ports:  # both instances refuse it
        assert login(port, "127.0.0.7", "target", PASSWORD).status == 429
    refused_until_unlocked(ports[1], "127.0.0.7", "target")


def test_two_instances_on_postgresql_share_the_ip_count(two_instances):
    ports = [gateway.port for gateway in two_instances]
    statuses = hammer(ports, "127.0.0.8", [f"nobody-{i}" for i in range(HAMMER)])
    assert statuses == {401: PER_IP, 429: HAMMER - PER_IP}
    refused_until_unlocked(ports[0], "127.0.0.8", "bystander")
