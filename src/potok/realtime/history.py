"""Recent events per channel, in memory (the memory bus's history).

Offsets come from one counter for the whole process, so they only grow, also
for a channel whose history was evicted and started again. Recovery is exact
without contiguous offsets: events are dropped oldest first, so if the event a
client saw last (`since`) is still here, everything after it is here too.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from potok.realtime.events import Event


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """What a resubscribing client missed: the events after `since`, and whether that is all."""

    events: tuple[Event, ...]
    recovered: bool
    latest: int


class MemoryHistory:
    """The last `size` events of up to `max_channels` channels, none older than `ttl`."""

    def __init__(
        self,
        size: int,
        ttl: float,
        max_channels: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.size = size
        self.ttl = ttl
        self.max_channels = max_channels
        self._clock = clock
        self._offset = 0
        self._channels: OrderedDict[str, deque[Event]] = OrderedDict()
        self._latest: OrderedDict[str, int] = OrderedDict()

    def append(self, event: Event) -> int:
        """Give `event` the next offset and keep it; returns the offset."""
        self._offset += 1
        event.offset = self._offset
        self._remember_latest(event.channel, self._offset)
        if self.size:
            events = self._channels.get(event.channel)
            if events is None:
                events = self._channels[event.channel] = deque(maxlen=self.size)
                if len(self._channels) > self.max_channels:
                    self._channels.popitem(last=False)
            else:
                self._channels.move_to_end(event.channel)
            events.append(event)
        return self._offset

    def _remember_latest(self, channel: str, offset: int) -> None:
        latest = self._latest
        latest[channel] = offset
        latest.move_to_end(channel)
        if len(latest) > self.max_channels * 4:
            latest.popitem(last=False)

    def latest(self, channel: str) -> int:
        return self._latest.get(channel, 0)

    def since(self, channel: str, since: int) -> HistoryPage:
        latest = self.latest(channel)
        if since == latest:
            return HistoryPage((), True, latest)
        horizon = self._clock() - self.ttl
        events = [e for e in self._channels.get(channel, ()) if e.ts >= horizon]
        found = any(e.offset == since for e in events)
        after = tuple(e for e in events if e.offset is not None and e.offset > since)
        return HistoryPage(after, found and since < latest, latest)
