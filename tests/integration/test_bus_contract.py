"""One contract suite run against every event bus backend (memory, real Redis, real NATS)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from potok.config.models import GatewayConfig
from potok.realtime.bus import EventBus, build_bus
from potok.realtime.events import Event, make_event
from tests.support.realtime import realtime_config

BACKENDS = ["memory", "redis", "nats"]


def _config(backend: str, **realtime: Any) -> GatewayConfig:
    # A fresh subject prefix and stream per test: runs never see each other's events.
    unique = uuid.uuid4().hex[:10]
    bus: dict[str, Any] = {"backend": backend, "subject_prefix": f"t{unique}.events"}
    if backend == "redis":
        bus["redis"] = {"url": "redis://127.0.0.1:6379/0"}
    if backend == "nats":
        bus["nats"] = {"stream": f"T{unique}", "storage": "memory"}
    config = realtime_config(bus=bus, **realtime)
    config["redis"] = {"key_prefix": f"t{unique}:"}
    return GatewayConfig.model_validate(config)


class Received:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.errors: list[str] = []
        self._changed = asyncio.Event()

    def deliver(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def error(self, kind: str) -> None:
        self.errors.append(kind)

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Event]:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while len(self.events) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.events


@pytest.fixture(params=BACKENDS)
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[tuple[EventBus, Received]]:
    config = _config(request.param, history={"size": 5, "ttl": "1m"})
    assert config.realtime is not None
    backend = build_bus(config.realtime, config)
    received = Received()
    await backend.start(received.deliver, received.error)
    assert backend.connected
    yield backend, received
    if request.param == "nats":
        await _delete_stream(backend)
    await backend.close()


async def _delete_stream(backend: Any) -> None:
    js = backend._js
    if js is not None:
        await js.delete_stream(backend.nats.stream)


async def test_publish_is_delivered_with_an_offset(bus):
    backend, received = bus
    event = make_event("org:acme:tasks", "task:created", {"id": 1}, "e-1")
    published = await backend.publish(event)
    assert not published.duplicate and published.offset is not None and published.offset > 0
    (got,) = await received.wait_for(1)
    assert (got.id, got.channel, got.type, got.data) == (
        "e-1",
        "org:acme:tasks",
        "task:created",
        {"id": 1},
    )
    assert got.offset == published.offset
    assert await backend.latest("org:acme:tasks") == published.offset
    # An empty channel's position: 0, or (NATS) the stream's; its next event comes after it.
    empty = await backend.latest("org:none:tasks")
    assert 0 <= empty <= published.offset
    later = await backend.publish(make_event("org:none:tasks", "task:created", None))
    assert later.offset is not None and later.offset > empty


async def test_duplicate_id_is_dropped_at_publish(bus):
    backend, received = bus
    first = await backend.publish(make_event("public:x", "t", 1, "dup-1"))
    second = await backend.publish(make_event("public:x", "t", 2, "dup-1"))
    assert not first.duplicate and second.duplicate
    await backend.publish(make_event("public:x", "t", 3, "dup-2"))
    events = await received.wait_for(2)
    await asyncio.sleep(0.2)
    assert [e.data for e in events] == [1, 3]


async def test_offsets_grow_per_channel_and_history_recovers(bus):
    backend, _received = bus
    offsets = []
    for i in range(4):
        offsets.append((await backend.publish(make_event("public:h", "t", i))).offset)
        await backend.publish(make_event("public:other", "t", i))  # interleaved channel
    assert offsets == sorted(offsets)
    page = await backend.history("public:h", offsets[0])
    assert page.recovered is True
    assert [e.data for e in page.events] == [1, 2, 3]
    assert [e.offset for e in page.events] == offsets[1:]
    assert page.latest == offsets[-1]
    up_to_date = await backend.history("public:h", offsets[-1])
    assert up_to_date.recovered is True and up_to_date.events == ()


async def test_history_too_old_says_not_recovered(bus):
    backend, _ = bus
    first = (await backend.publish(make_event("public:old", "t", 0))).offset
    for i in range(1, 9):  # history keeps 5 per channel: the first is gone
        await backend.publish(make_event("public:old", "t", i))
    page = await backend.history("public:old", first)
    assert page.recovered is False
    assert [e.data for e in page.events] == [4, 5, 6, 7, 8]
    future = await backend.history("public:old", page.latest + 1000)
    assert future.recovered is False


async def test_a_channel_empty_when_subscribed_is_recovered(bus):
    backend, _ = bus
    position = await backend.latest("public:fresh")
    for since in {0, position}:
        assert (await backend.history("public:fresh", since)).recovered is True
    await backend.publish(make_event("public:fresh", "t", 1))
    for since in {0, position}:
        page = await backend.history("public:fresh", since)
        assert page.recovered is True and [e.data for e in page.events] == [1]
    for i in range(2, 8):  # history keeps 5 per channel: the first is gone now
        await backend.publish(make_event("public:fresh", "t", i))
    for since in {0, position}:
        assert (await backend.history("public:fresh", since)).recovered is False
