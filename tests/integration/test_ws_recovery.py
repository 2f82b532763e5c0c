"""Recovery with `since` through the real gateway, on every bus (memory, real Redis, real
NATS): a client that reconnects while events keep coming gets each one exactly once — no
duplicates, no gaps — and a channel that was empty when it subscribed is recovered."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import nats
import pytest
import socketio

from tests.support.gateway import GatewayProcess
from tests.support.net import request
from tests.support.realtime import Client, publish, realtime_config, token

BUSES = ["memory", "redis", "nats"]
EVENTS = 300


class BusGateway:
    """A gateway on `backend` with names of its own (prefix, stream, Redis keys)."""

    def __init__(self, backend: str) -> None:
        unique = uuid.uuid4().hex[:10]
        self.backend = backend
        self.stream = f"R{unique}"
        bus: dict[str, Any] = {"backend": backend, "subject_prefix": f"r{unique}.events"}
        if backend == "nats":
            bus["nats"] = {"stream": self.stream, "storage": "memory"}
        config = realtime_config(bus=bus, history={"size": 1000, "ttl": "5m"})
        if backend == "redis":
            config["redis"] = {"key_prefix": f"r{unique}:"}
        self.process = GatewayProcess(config)
        self.port = self.process.port

    def stop(self) -> None:
        self.process.stop()
        if self.backend == "nats":
            asyncio.run(self._delete_stream())

    async def _delete_stream(self) -> None:
        connection = await nats.connect("nats://127.0.0.1:4222")
        try:
            await connection.jetstream().delete_stream(self.stream)
        finally:
            await connection.close()


@pytest.fixture(scope="module", params=BUSES)
def gateway(request: pytest.FixtureRequest) -> Iterator[BusGateway]:
    process = BusGateway(request.param)
    yield process
    process.stop()


def _channel() -> str:
    return f"public:r{uuid.uuid4().hex[:8]}"


def _publish_steadily(port: int, channel: str, count: int, done: threading.Event) -> list[str]:
    """`count` events in small batches, a few milliseconds apart (in a thread)."""
    ids = []
    for start in range(0, count, 3):
        batch = [
            {"channel": channel, "type": "tick", "data": n, "id": f"{channel[7:]}-{n}"}
            for n in range(start, min(start + 3, count))
        ]
        response = publish(port, *batch)
        assert response.status == 202, response.body
        ids.extend(event["id"] for event in batch)
        time.sleep(0.005)
    done.set()
    return ids


def _warm_up(port: int, channel: str) -> int:
    """One event before the run; its offset is where the client starts."""
    response = publish(port, {"channel": channel, "type": "warm", "data": None})
    assert response.status == 202
    offset: int = response.json()["offset"]
    return offset


async def test_empty_channel_subscribed_at_offset_0_is_recovered(gateway):
    channel = _channel()
    first = await Client.open(gateway.port)
    await first.authenticate(token())
    reply = await first.subscribe(channel)
    assert reply["type"] == "subscribed"
    await first.close()
    assert publish(gateway.port, {"channel": channel, "type": "t", "data": 1}).status == 202
    positions = {reply["offset"]}
    if gateway.backend != "nats":
        assert reply["offset"] == 0
    positions.add(0)  # as docs/realtime.md says: the reply's offset, or 0 for an empty channel
    for since in sorted(positions):
        again = await Client.open(gateway.port)
        await again.authenticate(token())
        recovered = await again.subscribe(channel, since=since)
        assert recovered["recovered"] is True, (since, recovered)
        (event,) = await again.events(1)
        assert event["data"] == 1
        assert await again.quiet() == []
        await again.close()


async def test_reconnects_with_since_under_concurrent_publishing_lose_and_repeat_nothing(
    gateway,
):
    channel = _channel()
    since = _warm_up(gateway.port, channel)
    done = threading.Event()
    publisher = asyncio.create_task(
        asyncio.to_thread(_publish_steadily, gateway.port, channel, EVENTS, done)
    )
    received: list[dict[str, Any]] = []
    reconnects = 0
    while True:
        client = await Client.open(gateway.port)
        await client.authenticate(token())
        reply = await client.subscribe(channel, since=since)
        assert reply["type"] == "subscribed" and reply["recovered"] is True, reply
        try:
            for _ in range(8):  # read a few, then drop the connection mid-stream
                (event,) = await client.events(1, timeout=2 if done.is_set() else 10)
                received.append(event)
                since = event["offset"]
        except TimeoutError:
            break  # publishing is over and everything has been read
        finally:
            await client.close()
        reconnects += 1
    published = await publisher
    ids = [e["id"] for e in received]
    duplicates = len(ids) - len(set(ids))
    missing = set(published) - set(ids)
    assert duplicates == 0, f"{duplicates} duplicates over {reconnects} reconnects"
    assert not missing, f"{len(missing)} events missing over {reconnects} reconnects"
    assert ids == published  # and in order
    assert reconnects >= 20


async def test_socketio_reconnects_with_since_lose_and_repeat_nothing(gateway):
    channel = _channel()
    since = _warm_up(gateway.port, channel)
    done = threading.Event()
    publisher = asyncio.create_task(
        asyncio.to_thread(_publish_steadily, gateway.port, channel, EVENTS // 2, done)
    )
    received: list[dict[str, Any]] = []
    reconnects = 0
    while True:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        sio = socketio.AsyncClient(reconnection=False)

        @sio.on("tick")
        async def on_tick(body: dict[str, Any], queue: asyncio.Queue[Any] = queue) -> None:
            await queue.put(body)

        await sio.connect(
            f"http://127.0.0.1:{gateway.port}",
            socketio_path="/api/v1/socket.io",
            auth={"token": token()},
            transports=["websocket"],
            wait_timeout=5,
        )
        reply = await sio.call("subscribe", {"channel": channel, "since": since}, timeout=5)
        assert reply["type"] == "subscribed" and reply["recovered"] is True, reply
        try:
            for _ in range(8):
                event = await asyncio.wait_for(queue.get(), 2 if done.is_set() else 10)
                received.append(event)
                since = event["offset"]
        except TimeoutError:
            break
        finally:
            await sio.disconnect()
        reconnects += 1
    published = await publisher
    ids = [e["id"] for e in received]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicates"
    assert ids == published
    assert reconnects >= 10


def _bus_errors(port: int) -> float:
    text = request(port, "GET", "/api/v1/metrics").body.decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("realtime_bus_errors_total{")
    )


async def test_an_event_larger_than_the_bus_carries_is_413_not_a_bus_outage(gateway):
    channel = _channel()
    client = await Client.open(gateway.port, max_size=None)
    await client.authenticate(token())
    await client.subscribe(channel)
    errors_before = _bus_errors(gateway.port)
    big = {"channel": channel, "type": "t", "data": "x" * 1_200_000}  # NATS: 1 MiB at most
    response = publish(gateway.port, big)
    if gateway.backend == "nats":
        assert response.status == 413, response.body
        problem = response.json()
        assert response.header("content-type") == "application/problem+json"
        limit = problem["max_event_bytes"]
        assert 1_000_000 < limit < 1_048_576 and str(limit) in problem["detail"]
        assert problem["published"] == 0
    else:  # memory and Redis carry it
        assert response.status == 202
        (event,) = await client.events(1)
        assert len(event["data"]) == 1_200_000
    assert _bus_errors(gateway.port) == errors_before
    # The bus connection is intact: the next event goes through at once.
    assert publish(gateway.port, {"channel": channel, "type": "t", "data": 2}).status == 202
    (event,) = await client.events(1)
    assert event["data"] == 2
    await client.close()
