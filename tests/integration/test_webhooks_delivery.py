"""Forwarding: retries with backoff until the service takes it, dead letter after the
last try, replay from the CLI and the admin API, ordering per source, the IP allow-list
behind trusted proxies, audit entries for refusals, and publishing on the event bus."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.identity_gateway import CHEAP_ARGON2, HS_SECRET, add_user, bearer, call
from tests.support.net import ResponseReader, build_request, request
from tests.support.realtime import Client, realtime_config, token
from tests.support.webhooks import (
    POTOK_SECRET,
    SW_SECRET,
    Receiver,
    metric,
    standard_headers,
    verify_potok,
    wait_until,
)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def config(receiver: Receiver, folder: Path, **delivery: Any) -> dict[str, Any]:
    return {
        # The breaker and passive ejection would hold deliveries back for their open time
        # (tests/integration/test_webhooks_crash.py runs with them): off, to see retries.
        "services": {
            "svc": {"targets": [receiver.url], "circuit_breaker": None, "passive_ejection": None}
        },
        "database": {"url": f"sqlite:///{folder / 'identity.db'}"},
        "auth": {"audit": {"flush_interval": "100ms"}},
        "webhooks": {
            "outbox": {"url": f"sqlite:///{folder / 'outbox.db'}", "lease": "2s"},
            "delivery": {
                "signing_secret": POTOK_SECRET,
                "initial_backoff": "50ms",
                "max_backoff": "200ms",
                "poll_interval": "50ms",
                "timeout": "1s",
                **delivery,
            },
            "sources": {
                "hooks": {"secrets": [SW_SECRET], "service": "svc", "upstream_path": "/in"},
                "queue": {"secrets": [SW_SECRET], "service": "svc", "ordered": True},
            },
        },
    }


def send(port: int, source: str, body: bytes, delivery: str) -> str:
    headers = {**standard_headers(body, delivery=delivery), "Content-Type": "application/json"}
    response = request(port, "POST", f"/api/v1/webhooks/{source}", headers, body)
    assert response.status == 200, response.body
    answer = response.json()
    assert isinstance(answer, dict)
    return str(answer["id"])


def cli(gateway: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "potok", *args, "--config", str(gateway.config_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_retried_with_backoff_until_the_service_takes_it(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.fail_with = 503
    gateway = GatewayProcess(config(receiver, tmp_path))
    try:
        ids = [send(gateway.port, "hooks", b'{"n": %d}' % i, f"r-{i}") for i in range(3)]
        wait_until(lambda: receiver.attempts >= 9)  # three tries each at least
        assert receiver.deliveries == []
        receiver.fail_with = None
        wait_until(lambda: sorted(receiver.ids()) == sorted(ids))
        time.sleep(0.3)
        assert sorted(receiver.ids()) == sorted(ids)  # each once, once it worked
        for got in receiver.deliveries:
            assert int(got.headers["Potok-Webhook-Attempt"]) >= 3
            assert verify_potok(got.headers, got.body)
        assert metric(gateway.port, "webhooks_delivery_attempts_total", result="failed") >= 6
        assert metric(gateway.port, "webhooks_delivery_attempts_total", result="delivered") == 3
    finally:
        gateway.stop()


def test_dead_letter_then_replay_from_the_cli(receiver: Receiver, tmp_path: Path) -> None:
    receiver.fail_with = 500
    gateway = GatewayProcess(config(receiver, tmp_path, max_attempts=3))
    try:
        dead = send(gateway.port, "hooks", b'{"dead": true}', "dl-1")
        wait_until(lambda: metric(gateway.port, "webhooks_dead_letters_total", source="hooks") == 1)
        attempts = receiver.attempts
        assert attempts == 3
        time.sleep(0.3)
        assert receiver.attempts == attempts  # nothing more once dead
        listed = cli(gateway, "webhooks", "list", "--state", "dead", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = [json.loads(line) for line in listed.stdout.splitlines()]
        assert [r["id"] for r in rows] == [dead]
        assert rows[0]["attempts"] == 3 and "500" in rows[0]["last_error"]
        shown = json.loads(cli(gateway, "webhooks", "show", dead).stdout)
        assert shown["body"] == '{"dead": true}' and shown["state"] == "dead"
        receiver.fail_with = None
        replayed = cli(gateway, "webhooks", "replay", dead)
        assert replayed.returncode == 0, replayed.stderr
        wait_until(lambda: receiver.ids() == [dead])
        purged = cli(gateway, "webhooks", "purge", "--state", "delivered")
        assert purged.stdout.startswith("1 delivered"), purged.stdout
        assert cli(gateway, "webhooks", "show", dead).returncode == 1
    finally:
        gateway.stop()


def test_ordered_source_delivers_in_acceptance_order(receiver: Receiver, tmp_path: Path) -> None:
    receiver.fail_with = 503
    gateway = GatewayProcess(config(receiver, tmp_path))
    try:
        ids = [send(gateway.port, "queue", b'{"n": %d}' % i, f"o-{i}") for i in range(6)]
        wait_until(lambda: receiver.attempts >= 4)
        receiver.fail_with = None
        wait_until(lambda: len(receiver.ids()) == 6)
        assert receiver.ids() == ids
    finally:
        gateway.stop()


def _from(address: str, port: int, data: bytes) -> int:
    """A request sent from another loopback address (a client that is not the proxy)."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.sendall(data)
        return ResponseReader(sock).read().status


def test_ip_allow_list_trusts_only_trusted_proxies(receiver: Receiver, tmp_path: Path) -> None:
    settings = config(receiver, tmp_path)
    settings["server"] = {"host": "0.0.0.0", "trusted_proxies": ["127.0.0.1/32"]}
    settings["webhooks"]["sources"]["hooks"]["allow_ips"] = ["203.0.113.0/24"]
    gateway = GatewayProcess(settings)
    try:
        body = b'{"ip": 1}'

        def attempt(source_ip: str, forwarded_for: str | None, delivery: str) -> int:
            headers = standard_headers(body, delivery=delivery)
            if forwarded_for is not None:
                headers["X-Forwarded-For"] = forwarded_for
            data = build_request("POST", "/api/v1/webhooks/hooks", headers, body)
            return _from(source_ip, gateway.port, data)

        assert attempt("127.0.0.1", "203.0.113.9", "ip-1") == 200  # via the trusted proxy
        assert attempt("127.0.0.1", "198.51.100.7", "ip-2") == 403
        assert attempt("127.0.0.1", None, "ip-3") == 403  # the proxy itself is not listed
        # The attack: a client that is not a trusted proxy claims an allowed address.
        assert attempt("127.0.0.2", "203.0.113.9", "ip-4") == 403
        denied = metric(gateway.port, "webhooks_rejected_total", source="hooks", reason="ip_denied")
        assert denied == 3
        wait_until(lambda: len(receiver.ids()) == 1)
        time.sleep(0.5)  # the audit log is written every flush_interval (100ms)
        audit = cli(gateway, "audit", "--event", "webhook.rejected", "--json")
        rows = [json.loads(line) for line in audit.stdout.splitlines()]
        assert {r["detail"]["reason"] for r in rows} == {"ip_denied"}
        assert {r["ip"] for r in rows} == {"198.51.100.7", "127.0.0.1", "127.0.0.2"}
    finally:
        gateway.stop()


def test_admin_endpoints_list_show_replay_purge(receiver: Receiver, tmp_path: Path) -> None:
    settings = config(receiver, tmp_path, max_attempts=1)
    settings["auth"] = {
        "token_service": {"enabled": True, "signing": {"algorithm": "HS256", "secret": HS_SECRET}},
        "passwords": CHEAP_ARGON2,
    }
    database = settings["database"]["url"]
    add_user(database, "root", "correct horse battery", roles=("admin",))
    add_user(database, "bob", "correct horse battery", roles=("reader",))
    receiver.fail_with = 500
    gateway = GatewayProcess(settings)
    try:
        dead = send(gateway.port, "hooks", b'{"admin": 1}', "adm-1")
        wait_until(lambda: metric(gateway.port, "webhooks_dead_letters_total") == 1)

        def login(user: str) -> dict[str, str]:
            answer = call(gateway.port, "POST", "/api/v1/auth/login",
                          {"username": user, "password": "correct horse battery"})  # fmt: skip
            return bearer(answer.json()["access_token"])

        base = "/api/v1/admin/webhooks"
        assert call(gateway.port, "GET", f"{base}/deliveries").status == 401
        assert call(gateway.port, "GET", f"{base}/deliveries", **login("bob")).status == 403
        admin = login("root")
        listed = call(gateway.port, "GET", f"{base}/deliveries?state=dead", **admin).json()
        assert [d["id"] for d in listed["deliveries"]] == [dead]
        shown = call(gateway.port, "GET", f"{base}/deliveries/{dead}", **admin).json()
        assert shown["body"] == '{"admin": 1}' and shown["headers"]["content-type"]
        receiver.fail_with = None
        replay = call(gateway.port, "POST", f"{base}/deliveries/{dead}/replay", **admin)
        assert replay.status == 202
        wait_until(lambda: receiver.ids() == [dead])
        assert call(gateway.port, "GET", f"{base}/outbox", **admin).status == 200
        purged = call(gateway.port, "POST", f"{base}/purge?state=delivered", **admin)
        assert purged.json() == {"purged": 1}
        assert call(gateway.port, "GET", f"{base}/deliveries/{dead}", **admin).status == 404
    finally:
        gateway.stop()


def test_published_on_the_bus_channel_of_its_source(tmp_path: Path) -> None:
    settings = realtime_config(
        channels=[{"pattern": "webhooks.*"}],
    )
    settings["webhooks"] = {
        "outbox": {"url": f"sqlite:///{tmp_path / 'outbox.db'}"},
        "delivery": {"poll_interval": "50ms"},
        "sources": {"pub": {"secrets": [SW_SECRET], "publish": True}},
    }
    gateway = GatewayProcess(settings)

    async def scenario() -> None:
        client = await Client.open(gateway.port)
        await client.authenticate(token())
        subscribed = await client.subscribe("webhooks.pub")
        assert subscribed["type"] == "subscribed", subscribed
        delivery = await asyncio.to_thread(send, gateway.port, "pub", b'{"hello": "bus"}', "b-1")
        [event] = await client.events(1)
        assert event["channel"] == "webhooks.pub" and event["id"] == delivery
        assert event["data"]["body"] == {"hello": "bus"} and event["data"]["source"] == "pub"
        await client.close()

    try:
        asyncio.run(scenario())
    finally:
        gateway.stop()


def test_an_open_breaker_holds_deliveries_back_without_spending_attempts(
    receiver: Receiver, tmp_path: Path
) -> None:
    """Two failures open the breaker for 2 s. Retried at 50 ms, the third and last attempt
    would be spent against the open breaker and the delivery would die; held back instead
    (nothing sent, no attempt spent), it waits for the breaker's probe and arrives."""
    settings = config(receiver, tmp_path, max_attempts=3)
    settings["services"]["svc"]["circuit_breaker"] = {
        "consecutive_failures": 2,
        "open_for": "2s",
    }
    receiver.fail_with = 503
    gateway = GatewayProcess(settings)
    try:
        held = send(gateway.port, "hooks", b'{"held": 1}', "br-1")
        wait_until(
            lambda: (
                metric(gateway.port, "webhooks_delivery_attempts_total", result="held_back") >= 1
            )
        )
        receiver.fail_with = None
        wait_until(lambda: receiver.ids() == [held], timeout=15)
        assert metric(gateway.port, "webhooks_dead_letters_total") == 0
    finally:
        gateway.stop()


def test_a_reload_that_adds_webhooks_starts_them(receiver: Receiver, tmp_path: Path) -> None:
    settings = config(receiver, tmp_path)
    webhooks = settings.pop("webhooks")
    gateway = GatewayProcess(settings)
    try:
        assert request(gateway.port, "POST", "/api/v1/webhooks/hooks", {}, b"{}").status == 404
        gateway.write_config({**settings, "webhooks": webhooks})
        gateway.signal(signal.SIGHUP)

        def accepted() -> bool:
            body = b'{"reloaded": true}'
            headers = standard_headers(body, delivery="reload-1")
            return (
                request(gateway.port, "POST", "/api/v1/webhooks/hooks", headers, body).status == 200
            )

        wait_until(accepted, timeout=20, interval=0.3)
        wait_until(lambda: len(receiver.ids()) == 1)
    finally:
        gateway.stop()
