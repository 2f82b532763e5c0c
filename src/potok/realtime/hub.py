"""The fan-out engine: channel -> subscribers, one encoding per event, bounded buffers.

An event from the bus is encoded once (JSON, then one unmasked WebSocket
frame) and the same bytes go to every subscriber. They are queued per
connection and written at the end of the event-loop iteration, so a burst of
events costs one write (one syscall) per connection, not one per event.
Frames beyond what the transport takes wait per connection (server/websocket.py,
`write_frames`); a client whose unsent bytes exceed `limits.send_buffer` has
them dropped and is closed with 1013 (the close frame goes out first), so
whatever clients do, each costs at most that bound.

A new subscription first collects live events while the bus answers the
subscription's position (and history, with `since`); then the missed events,
the collected ones after them, and from then on live ones go out in order,
none twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import orjson
import structlog

from potok.realtime.dedup import DedupWindow
from potok.realtime.events import Event
from potok.server.websocket import text_frame

if TYPE_CHECKING:
    from potok.realtime.bus.base import EventBus
    from potok.realtime.config import LimitsConfig
    from potok.realtime.metrics import RealtimeMetrics

log = structlog.get_logger("potok.realtime")


class Member(Protocol):
    """A plain WebSocket subscriber (see realtime.websocket.RealtimeSession)."""

    last_seen: float
    outbox: list[bytes]  # frames queued in this loop iteration (written by Hub.flush)

    def write_frames(self, data: bytes) -> bool: ...

    def slow_consumer(self) -> None: ...

    def heartbeat(self, now: float) -> None: ...


class SocketIoSink(Protocol):
    """Socket.IO's side of the fan-out: one emit per event to the channel's room."""

    def emit(self, event: Event, members: int) -> None: ...

    def heartbeat(self, now: float) -> None: ...

    async def shutdown(self) -> None: ...


class Channel:
    __slots__ = ("_targets", "floors", "last_offset", "members", "name", "pending", "socketio")

    def __init__(self, name: str) -> None:
        self.name = name
        self.last_offset: int | None = None  # the newest position this worker has seen
        self.members: dict[Member, None] = {}
        self.pending: dict[Member, list[Event]] = {}
        # New members and the offset they were given (reply or history): live events at or
        # before it are not theirs. Events come in offset order, so a floor lasts only until
        # the first event past it.
        self.floors: dict[Member, int] = {}
        self.socketio = 0
        self._targets: tuple[Member, ...] | None = ()

    def targets(self) -> tuple[Member, ...]:
        targets = self._targets
        if targets is None:
            targets = self._targets = tuple(self.members)
        return targets

    def changed(self) -> None:
        self._targets = None

    @property
    def empty(self) -> bool:
        return not self.members and not self.pending and not self.socketio


class Hub:
    def __init__(
        self,
        limits: LimitsConfig,
        metrics: RealtimeMetrics,
        dedup: DedupWindow,
        pending_limit: int = 1000,
    ) -> None:
        self.limits = limits
        self.metrics = metrics
        self.dedup = dedup
        self.pending_limit = pending_limit
        self.channels: dict[str, Channel] = {}
        self.members: set[Member] = set()
        self.socketio: SocketIoSink | None = None
        self.closing = False
        self._send_buffer = limits.send_buffer
        self._heartbeat: asyncio.Task[None] | None = None
        self._emptied: asyncio.Event | None = None
        self._dirty: list[Member] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        out, fanout, events = metrics.messages_out, metrics.fanout, metrics.events
        self._count_out = out.inc
        self._observe_fanout = fanout.observe
        self._count_event = events.inc

    # Delivery (the bus calls this for every event) -------------------------------

    def deliver(self, event: Event) -> None:
        if not self.dedup.first_time(event.id):
            self._count_event(("duplicate",))
            return
        channel = self.channels.get(event.channel)
        if channel is None:
            self._count_event(("no_subscribers",))
            return
        self._count_event(("delivered",))
        if event.offset is not None:
            channel.last_offset = event.offset
        targets = channel.targets()
        if channel.floors:
            targets = self._above_floors(channel, targets, event.offset)
        if targets:
            frame = text_frame(orjson.dumps(event.client_message()))
            dirty = self._dirty
            if not dirty:
                loop = self._loop
                if loop is None:
                    loop = self._loop = asyncio.get_running_loop()
                loop.call_soon(self.flush)
            for member in targets:
                outbox = member.outbox
                if not outbox:
                    dirty.append(member)
                outbox.append(frame)
            self._count_out(("websocket",), len(targets))
        if channel.pending:
            for buffer in channel.pending.values():
                if len(buffer) <= self.pending_limit:
                    buffer.append(event)
        if channel.socketio and self.socketio is not None:
            self.socketio.emit(event, channel.socketio)
        self._observe_fanout((), max(0.0, time.time() - event.ts))

    @staticmethod
    def _above_floors(
        channel: Channel, targets: tuple[Member, ...], offset: int | None
    ) -> tuple[Member, ...]:
        floors = channel.floors
        skip = set()
        for member, floor in list(floors.items()):
            if offset is not None and offset <= floor:
                skip.add(member)
            else:
                del floors[member]
        return tuple(m for m in targets if m not in skip) if skip else targets

    def flush(self) -> None:
        """Write each connection's queued frames at once; cut off the ones that lag."""
        dirty, self._dirty = self._dirty, []
        for member in dirty:
            outbox = member.outbox
            if not outbox:
                continue  # closed meanwhile
            data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
            outbox.clear()
            if not member.write_frames(data):
                member.slow_consumer()

    # Subscriptions -----------------------------------------------------------------

    def _channel(self, name: str) -> Channel:
        channel = self.channels.get(name)
        if channel is None:
            channel = self.channels[name] = Channel(name)
        return channel

    def begin(self, name: str, member: Member) -> None:
        """Start a subscription: live events are collected until `finish`."""
        self._channel(name).pending[member] = []

    def finish(self, name: str, member: Member, position: int | None) -> list[Event]:
        """Make the subscription live; returns the collected events after `position`
        (for the caller to send before anything else arrives)."""
        channel = self._channel(name)
        collected = channel.pending.pop(member, [])
        channel.members[member] = None
        channel.changed()
        if position is None:
            return collected
        if (channel.last_offset or 0) < position:
            channel.last_offset = position
        channel.floors[member] = position
        return [e for e in collected if e.offset is None or e.offset > position]

    def leave(self, name: str, member: Member) -> None:
        channel = self.channels.get(name)
        if channel is None:
            return
        channel.pending.pop(member, None)
        channel.floors.pop(member, None)
        if channel.members.pop(member, 0) is None:
            channel.changed()
        if channel.empty:
            del self.channels[name]

    def socketio_join(self, name: str) -> None:
        self._channel(name).socketio += 1

    def socketio_leave(self, name: str) -> None:
        channel = self.channels.get(name)
        if channel is not None and channel.socketio > 0:
            channel.socketio -= 1
            if channel.empty:
                del self.channels[name]

    def subscribers(self, name: str) -> int:
        channel = self.channels.get(name)
        return 0 if channel is None else len(channel.members) + channel.socketio

    async def catch_up(self, bus: EventBus, restarted: bool) -> None:
        """After the bus was cut off: deliver what each subscribed channel missed (the
        history since the last position seen; repeats are dropped by id). A bus that
        `restarted` without its data counts offsets from 1 again: all it holds is new."""
        for name, channel in list(self.channels.items()):
            since = 0 if restarted else channel.last_offset
            if since is None or (not channel.members and not channel.socketio):
                continue
            try:
                page = await bus.history(name, since)
            except Exception as exc:
                log.warning("realtime catch-up failed", channel=name, error=str(exc))
                return
            for event in page.events:
                self.deliver(event)

    # Connections ----------------------------------------------------------------------

    def add(self, member: Member) -> None:
        self.members.add(member)

    def remove(self, member: Member) -> None:
        self.members.discard(member)
        if not self.members and self._emptied is not None:
            self._emptied.set()

    def start(self) -> None:
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.limits.ping_interval)
            now = loop.time()
            for member in list(self.members):
                try:
                    member.heartbeat(now)
                except Exception as exc:  # one broken connection must not stop the others'
                    log.warning("realtime heartbeat failed", error=str(exc))
            if self.socketio is not None:
                try:
                    self.socketio.heartbeat(now)
                except Exception as exc:
                    log.warning("socket.io heartbeat failed", error=str(exc))

    async def shutdown(self, close: Callable[[Member], None], grace: float) -> None:
        """Close every connection with `close` (1001), waiting up to `grace` for them to go."""
        self.closing = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        if self.socketio is not None:
            await self.socketio.shutdown()
        if not self.members:
            return
        self._emptied = asyncio.Event()
        for member in list(self.members):
            close(member)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._emptied.wait(), grace)
