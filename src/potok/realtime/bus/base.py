"""The event bus interface every backend implements (memory, Redis, NATS).

A bus carries events between publishers and every gateway instance. The hub
`start`s it with a callback; the bus calls it on the event loop for each
event any instance publishes (its own included), at least once, in publish
order per channel. The hub drops repeats by id, so "at least once" becomes
"exactly once" per instance within the de-duplication window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from potok.realtime.events import Event
from potok.realtime.history import HistoryPage

Deliver = Callable[[Event], None]
OnError = Callable[[str], None]
OnReconnect = Callable[[bool], None]  # argument: the bus lost its stored events


class BusUnavailable(Exception):
    """The bus cannot be reached now; the publish did not happen."""


class EventTooLarge(Exception):
    """The event is larger than the bus carries: the publisher's fault, not the bus's
    (413, never retried as if the bus were down, not counted as a bus error)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the event is {size} bytes; the event bus carries at most {limit}")
        self.size = size
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Published:
    """A publish's outcome: the offset the bus stored it at, or a dropped duplicate."""

    offset: int | None
    duplicate: bool = False


class EventBus(Protocol):
    name: str

    @property
    def connected(self) -> bool:
        """Whether the bus is reachable now (for health and tests)."""
        ...

    async def start(
        self, deliver: Deliver, on_error: OnError, on_reconnect: OnReconnect | None = None
    ) -> None:
        """Connect and start delivering; a bus that is down now keeps retrying in the
        background (the gateway serves without it and counts the errors). A bus that may
        have missed events while it was cut off calls `on_reconnect` once it is back, so
        the hub can fetch them from the history."""
        ...

    async def publish(self, event: Event) -> Published:
        """Store and send one event; BusUnavailable when the bus is down, EventTooLarge
        when the event is bigger than the bus carries."""
        ...

    async def latest(self, channel: str) -> int:
        """The channel's newest offset (0: none kept)."""
        ...

    async def history(self, channel: str, since: int) -> HistoryPage:
        """The kept events after `since`, and whether they are all that was missed."""
        ...

    async def close(self) -> None: ...


def subject_for(prefix: str, channel: str) -> str:
    return f"{prefix}.{channel}"
