"""Recent events per channel, in memory (the memory bus's history).

Offsets come from one counter for the whole process, so they only grow, also
for a channel whose history was evicted and started again. Recovery is exact
without contiguous offsets: events are dropped oldest first, so if the event a
client saw last (`since`) is still here, everything after it is here too.
`since = 0` (the client subscribed while the channel was empty) is recovered
while the history still holds every event the channel ever had.
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


def position_after(latest: int | None, since: int | None, page: HistoryPage | None) -> int | None:
    """The newest offset a new subscriber has been given, by its `subscribed` reply
    (`latest`) and the missed events sent from the history: live events at or before
    it are not sent to it again (None: the bus is down, no position is known)."""
    if latest is None:
        return since
    newest = latest
    if page is not None and page.events:
        last = page.events[-1].offset
        if last is not None and last > newest:
            newest = last  # the history read may see a publish its `latest` did not
    # A `since` beyond `latest` is from another epoch (a bus that lost its data): ignored.
    return newest


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
        self._added: dict[str, int] = {}  # events ever appended, per channel in `_latest`

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
        self._added[channel] = self._added.get(channel, 0) + 1
        if len(latest) > self.max_channels * 4:
            forgotten, _ = latest.popitem(last=False)
            del self._added[forgotten]

    def latest(self, channel: str) -> int:
        return self._latest.get(channel, 0)

    def since(self, channel: str, since: int) -> HistoryPage:
        latest = self.latest(channel)
        if since == latest:
            return HistoryPage((), True, latest)
        horizon = self._clock() - self.ttl
        events = [e for e in self._channels.get(channel, ()) if e.ts >= horizon]
        after = tuple(e for e in events if e.offset is not None and e.offset > since)
        if since == 0:  # from the channel's start: recovered if it has lost nothing yet
            return HistoryPage(after, len(after) == self._added.get(channel, 0), latest)
        found = any(e.offset == since for e in events)
        return HistoryPage(after, found and since < latest, latest)
