"""Two gateway instances on one real bus (NATS JetStream, then Redis): each client gets each
event exactly once, duplicates are dropped, history is shared, direct bus publishers work."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import nats
import pytest
import redis.asyncio as aioredis

from tests.support.gateway import GatewayProcess
from tests.support.realtime import Client, publish, realtime_config, token


class Cluster:
    def __init__(self, backend: str) -> None:
        unique = uuid.uuid4().hex[:10]
        self.backend = backend
        self.prefix = f"c{unique}.events"
        self.stream = f"C{unique}"
        self.key_prefix = f"c{unique}:"
        bus: dict[str, Any] = {"backend": backend, "subject_prefix": self.prefix}
        if backend == "nats":
            bus["nats"] = {"stream": self.stream}
        config = realtime_config(bus=bus)
        if backend == "redis":
            config["redis"] = {"key_prefix": self.key_prefix}
        self.gateways = [GatewayProcess(config), GatewayProcess(config)]

    def stop(self) -> None:
        for gateway in self.gateways:
            gateway.stop()

    async def cleanup(self) -> None:
        if self.backend == "nats":
            connection = await nats.connect("nats://127.0.0.1:4222")
            try:
                await connection.jetstream().delete_stream(self.stream)
            finally:
                await connection.close()

    async def publish_directly(self, channel: str, event: dict[str, Any]) -> None:
        """As a back-end service would, straight on the bus (docs/realtime.md)."""
        subject = f"{self.prefix}.{channel}"
        payload = json.dumps(event).encode()
        if self.backend == "nats":
            connection = await nats.connect("nats://127.0.0.1:4222")
            try:
                await connection.jetstream().publish(
                    subject, payload, headers={"Nats-Msg-Id": event["id"]}
                )
            finally:
                await connection.close()
        else:
            client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
            try:
                await client.publish(subject, payload)
            finally:
                await client.aclose()


@pytest.fixture(params=["nats", "redis"], scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    cluster = Cluster(request.param)
    yield cluster
    cluster.stop()
    import asyncio

    asyncio.run(cluster.cleanup())


async def _subscribed_pair(cluster: Cluster, channel: str) -> list[Client]:
    clients = []
    for gateway in cluster.gateways:
        client = await Client.open(gateway.port)
        await client.authenticate(token())
        assert (await client.subscribe(channel))["type"] == "subscribed"
        clients.append(client)
    return clients


async def test_one_event_reaches_a_client_on_each_instance_exactly_once(cluster):
    clients = await _subscribed_pair(cluster, "org:acme:tasks")
    response = publish(
        cluster.gateways[0].port,
        {"channel": "org:acme:tasks", "type": "task:created", "data": {"n": 1}, "id": "once-1"},
    )
    assert response.status == 202, response.body
    for client in clients:
        (event,) = await client.events(1)
        assert event["id"] == "once-1" and event["data"] == {"n": 1}
        assert event["offset"] == response.json()["offset"]
    for client in clients:
        assert await client.quiet(0.5) == []
        await client.close()


async def test_duplicate_id_published_twice_is_delivered_once(cluster):
    clients = await _subscribed_pair(cluster, "org:acme:tasks")
    event = {"channel": "org:acme:tasks", "type": "task:updated", "data": 2, "id": "dup-x"}
    first = publish(cluster.gateways[0].port, event)
    second = publish(cluster.gateways[1].port, event)  # the same id, through the other instance
    assert first.status == second.status == 202
    assert second.json()["duplicate"] is True
    for client in clients:
        (got,) = await client.events(1)
        assert got["id"] == "dup-x"
        assert await client.quiet(0.5) == []
        await client.close()


async def test_back_end_publishing_on_the_bus_directly(cluster):
    clients = await _subscribed_pair(cluster, "org:acme:tasks")
    event = {"id": "direct-1", "type": "task:created", "data": {"from": "service"}}
    await cluster.publish_directly("org:acme:tasks", event)
    await cluster.publish_directly("org:acme:tasks", event)  # a retry by the service
    for client in clients:
        (got,) = await client.events(1)
        assert got["id"] == "direct-1" and got["event"] == "task:created"
        assert await client.quiet(0.5) == []
        await client.close()


async def test_recovery_across_instances(cluster):
    first, _ = cluster.gateways
    client = await Client.open(first.port)
    await client.authenticate(token())
    position = (await client.subscribe("org:acme:tasks"))["offset"]
    await client.close()
    for i in range(10):
        response = publish(
            cluster.gateways[i % 2].port,
            {"channel": "org:acme:tasks", "type": "task:updated", "data": i},
        )
        assert response.status == 202
    again = await Client.open(cluster.gateways[1].port)
    await again.authenticate(token())
    reply = await again.subscribe("org:acme:tasks", since=position)
    assert reply["recovered"] is True
    missed = await again.events(10)
    assert [e["data"] for e in missed] == list(range(10))
    assert await again.quiet() == []
    await again.close()
