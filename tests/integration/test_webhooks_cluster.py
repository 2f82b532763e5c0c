"""Two gateways sharing one PostgreSQL outbox (a database of its own per test): a replay
sent to the other instance is still a replay, and the forwarders of both never send one
delivery twice at the same time (row claims with FOR UPDATE SKIP LOCKED, then a lease).
Also two worker processes of one gateway sharing a SQLite outbox."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.identity_db import postgres_database
from tests.support.net import request
from tests.support.webhooks import (
    POTOK_SECRET,
    SW_SECRET,
    Receiver,
    metric,
    standard_headers,
    wait_until,
)

DELIVERIES = 200


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(delay=0.05)  # slow enough that a second sender would overlap
    yield server
    server.stop()


def config(receiver: Receiver, outbox_url: str) -> dict[str, Any]:
    return {
        "logging": {"level": "warning"},
        "services": {"svc": {"targets": [receiver.url]}},
        "webhooks": {
            "outbox": {"url": outbox_url, "lease": "10s"},
            "delivery": {"signing_secret": POTOK_SECRET, "poll_interval": "50ms", "timeout": "2s"},
            "sources": {"hooks": {"secrets": [SW_SECRET], "service": "svc"}},
        },
    }


def post(port: int, n: int) -> Any:
    body = b'{"n": %d}' % n
    headers = standard_headers(body, delivery=f"c-{n}")
    return request(port, "POST", "/api/v1/webhooks/hooks", headers, body)


def share_one_outbox(gateways: list[GatewayProcess], receiver: Receiver) -> None:
    ports = [g.port for g in gateways]

    def send(n: int) -> int:
        return int(post(random.choice(ports), n).status)

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(send, range(DELIVERIES))) == {200}
    wait_until(lambda: len(receiver.ids()) >= DELIVERIES, timeout=60)
    # A replay through any instance is known to all.
    for port in ports:
        again = post(port, 7)
        assert again.status == 200 and again.json() == {"status": "duplicate"}
    counts = Counter(receiver.ids())
    assert len(counts) == DELIVERIES
    assert receiver.overlaps == 0  # never the same delivery in flight twice
    assert max(counts.values()) == 1  # and, with no crash, never twice at all
    # (Workers of one gateway publish their metrics to each other every few seconds.)
    wait_until(
        lambda: sum(metric(p, "webhooks_accepted_total") for p in ports) == DELIVERIES,
        timeout=20,
        interval=0.5,
    )


def test_two_instances_on_postgresql(receiver: Receiver) -> None:
    with postgres_database() as url:
        gateways = [GatewayProcess(config(receiver, url)) for _ in range(2)]
        try:
            share_one_outbox(gateways, receiver)
            # Both forwarded some: the work was shared, not one idle.
            delivered = [
                metric(g.port, "webhooks_delivery_attempts_total", result="delivered")
                for g in gateways
            ]
            assert sum(delivered) == DELIVERIES and min(delivered) > 0
        finally:
            for gateway in gateways:
                gateway.stop()


def test_two_workers_on_one_sqlite_file(receiver: Receiver, tmp_path: Path) -> None:
    gateway = GatewayProcess(config(receiver, f"sqlite:///{tmp_path / 'outbox.db'}"), workers=2)
    try:
        share_one_outbox([gateway], receiver)
    finally:
        gateway.stop()
