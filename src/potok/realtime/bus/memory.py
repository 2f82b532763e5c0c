"""The in-process bus: the embedded default (one instance, one worker)."""

from __future__ import annotations

import asyncio

from potok.realtime.bus.base import Deliver, OnError, OnReconnect, Published
from potok.realtime.dedup import DedupWindow
from potok.realtime.events import Event
from potok.realtime.history import HistoryPage, MemoryHistory


class MemoryBus:
    name = "memory"

    def __init__(self, history: MemoryHistory, dedup: DedupWindow) -> None:
        self._history = history
        self._dedup = dedup  # a duplicate is refused at publish, like the Redis and NATS buses
        self._deliver: Deliver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def connected(self) -> bool:
        return True

    async def start(
        self, deliver: Deliver, on_error: OnError, on_reconnect: OnReconnect | None = None
    ) -> None:
        self._deliver = deliver
        self._loop = asyncio.get_running_loop()

    async def publish(self, event: Event) -> Published:
        if not self._dedup.first_time(event.id):
            return Published(None, duplicate=True)
        offset = self._history.append(event)
        if self._deliver is not None and self._loop is not None:
            # Later, not now: a publisher inside a subscriber's handler must not re-enter the hub.
            self._loop.call_soon(self._deliver, event)
        return Published(offset)

    async def latest(self, channel: str) -> int:
        return self._history.latest(channel)

    async def history(self, channel: str, since: int) -> HistoryPage:
        return self._history.since(channel, since)

    async def close(self) -> None:
        self._deliver = None
