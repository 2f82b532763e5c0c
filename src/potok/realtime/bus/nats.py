"""NATS bus on JetStream: one stream captures `<subject_prefix>.>`.

The stream is the history (max messages per subject = history.size, max age
= history.ttl) and drops duplicates by `Nats-Msg-Id` (= the event id) within
its duplicate window; the stream sequence is the event's offset. Each gateway
instance reads new messages with an ordered push consumer, which after a lost
connection starts again behind the last sequence it saw, so events published
while an instance was cut off arrive once it is back.

Publishers outside the gateway publish the JSON event to `<prefix>.<channel>`
(with `Nats-Msg-Id: <id>` for de-duplication); a plain core NATS publish is
captured by the stream too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import nats
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoServersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, NotFoundError

from potok.realtime.bus.base import (
    BusUnavailable,
    Deliver,
    EventTooLarge,
    OnError,
    OnReconnect,
    Published,
    subject_for,
)
from potok.realtime.config import RealtimeConfig
from potok.realtime.events import BadEvent, Event, decode_event
from potok.realtime.history import HistoryPage

log = structlog.get_logger("potok.realtime.bus")

# The header block a publish carries: "NATS/1.0\r\nNats-Msg-Id: <id>\r\n\r\n".
_HEADER_FRAME = b"NATS/1.0\r\nNats-Msg-Id: \r\n\r\n"

_FAILURES: tuple[type[BaseException], ...] = (NatsError, OSError, TimeoutError, NatsTimeout)


class NatsBus:
    name = "nats"

    def __init__(self, config: RealtimeConfig) -> None:
        self.config = config
        self.nats = config.bus.nats
        self.prefix = config.bus.subject_prefix
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._subscription: Any = None
        self._deliver: Deliver | None = None
        self._on_error: OnError | None = None
        self._connector: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected and self._client is not None and self._client.is_connected

    async def start(
        self, deliver: Deliver, on_error: OnError, on_reconnect: OnReconnect | None = None
    ) -> None:
        # No use for on_reconnect: the ordered consumer resumes behind the last sequence.
        self._deliver = deliver
        self._on_error = on_error
        self._connector = asyncio.get_running_loop().create_task(self._connect_until_done())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), self.nats.connect_timeout * 2)

    def _report(self, kind: str) -> None:
        if self._on_error is not None:
            self._on_error(kind)

    async def _connect_until_done(self) -> None:
        while True:
            try:
                await self._connect()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("nats bus unavailable", error=str(exc) or type(exc).__name__)
                self._report("connection")
                if self._client is not None:
                    with contextlib.suppress(Exception):
                        await self._client.close()
                    self._client = None
                await asyncio.sleep(self.config.bus.reconnect_interval)

    async def _connect(self) -> None:
        async def disconnected() -> None:
            if self._connected:
                log.warning("nats bus connection lost")
                self._report("connection")
            self._connected = False

        async def reconnected() -> None:
            log.info("nats bus reconnected")
            if self._js is not None:
                try:  # a server that lost its state (memory storage) gets the stream back
                    await self._ensure_stream(self._js)
                except _FAILURES as exc:
                    log.warning("nats stream check failed", error=str(exc))
            self._connected = True

        async def error(exc: Exception) -> None:
            if not isinstance(exc, NoServersError | OSError):
                log.warning("nats bus error", error=str(exc) or type(exc).__name__)

        self._client = await nats.connect(
            servers=list(self.nats.servers),
            connect_timeout=self.nats.connect_timeout,
            reconnect_time_wait=self.config.bus.reconnect_interval,
            max_reconnect_attempts=-1,
            allow_reconnect=True,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            error_cb=error,
            name="potok-gateway",
        )
        self._js = self._client.jetstream(timeout=self.nats.publish_timeout)
        await self._ensure_stream(self._js)
        self._subscription = await self._js.subscribe(
            f"{self.prefix}.>",
            cb=self._received,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.NEW,
            idle_heartbeat=2.0,
            flow_control=True,
            stream=self.nats.stream,
        )
        self._connected = True
        self._ready.set()
        log.info("nats bus subscribed", stream=self.nats.stream, subject=f"{self.prefix}.>")

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        history = self.config.history
        stream = api.StreamConfig(
            name=self.nats.stream,
            subjects=[f"{self.prefix}.>"],
            max_msgs_per_subject=max(1, history.size),
            max_age=history.ttl,
            duplicate_window=min(self.config.dedup_window, history.ttl),  # NATS: <= max_age
            storage=api.StorageType.FILE if self.nats.storage == "file" else api.StorageType.MEMORY,
            num_replicas=self.nats.replicas,
            allow_direct=True,
        )
        try:
            await js.stream_info(self.nats.stream)
        except NotFoundError:
            await js.add_stream(stream)
            return
        with contextlib.suppress(BadRequestError):  # e.g. storage cannot change in place
            await js.update_stream(stream)

    async def _received(self, msg: Msg) -> None:
        skip = len(self.prefix) + 1
        headers = msg.headers
        try:
            offset = msg.metadata.sequence.stream
            header_id = headers.get("Nats-Msg-Id") if headers else None
            event = decode_event(msg.data, msg.subject[skip:], offset, header_id)
        except BadEvent as exc:
            log.warning("malformed event on the bus", subject=msg.subject, error=str(exc))
            self._report("malformed")
            return
        if self._deliver is not None:
            self._deliver(event)

    def _jetstream(self) -> JetStreamContext:
        if self._js is None or not self.connected:
            raise BusUnavailable("not connected to NATS")
        return self._js

    def _check_size(self, payload: bytes, event_id: str) -> None:
        """The server's max_payload counts the headers too, and a publish past it costs
        the whole connection (the server closes it): refused here instead."""
        assert self._client is not None
        limit = self._client.max_payload - len(_HEADER_FRAME) - len(event_id.encode())
        if len(payload) > limit:
            raise EventTooLarge(len(payload), limit)

    async def publish(self, event: Event) -> Published:
        js = self._jetstream()
        payload = event.bus_payload()
        self._check_size(payload, event.id)
        try:
            ack = await js.publish(
                subject_for(self.prefix, event.channel),
                payload,
                timeout=self.nats.publish_timeout,
                stream=self.nats.stream,
                headers={"Nats-Msg-Id": event.id},
            )
        except _FAILURES as exc:
            raise BusUnavailable(str(exc) or type(exc).__name__) from None
        if ack.duplicate:
            return Published(None, duplicate=True)
        event.offset = ack.seq
        return Published(ack.seq)

    async def latest(self, channel: str) -> int:
        last = await self._last_of(channel)
        if last:
            return last
        # An empty channel's position is the stream's: every later event of the channel
        # gets a higher sequence, so a client resubscribing with it can be recovered.
        # Looked at again after reading the stream's: an event published in between
        # would be at or below that position, and would count as given.
        stream_last = (await self._stream_state())[1]
        return await self._last_of(channel) or stream_last

    async def _last_of(self, channel: str) -> int:
        """The sequence of the channel's newest kept message (0: none)."""
        js = self._jetstream()
        try:
            message = await js.get_last_msg(self.nats.stream, subject_for(self.prefix, channel))
        except NotFoundError:
            return 0
        except _FAILURES as exc:
            raise BusUnavailable(str(exc) or type(exc).__name__) from None
        return int(message.seq or 0)

    async def _stream_state(self) -> tuple[int, int]:
        """The stream's first and last sequence."""
        js = self._jetstream()
        try:
            info = await js.stream_info(self.nats.stream)
        except _FAILURES as exc:
            raise BusUnavailable(str(exc) or type(exc).__name__) from None
        return int(info.state.first_seq or 0), int(info.state.last_seq or 0)

    async def history(self, channel: str, since: int) -> HistoryPage:
        """Recovered when nothing of the channel after `since` can have been dropped.
        JetStream drops a channel's messages two ways: by age, oldest of the whole
        stream first (then the stream's first sequence has moved past `since`), or
        because the channel holds `history.size` newer ones (then it holds exactly that
        many after `since`). Neither possible: nothing is missing."""
        js = self._jetstream()
        subject = subject_for(self.prefix, channel)
        stream = self.nats.stream
        first_seq, stream_last = await self._stream_state()  # first: see `latest`
        last = await self._last_of(channel)
        latest = last or stream_last
        if since == latest:
            return HistoryPage((), True, latest)
        horizon = time.time() - self.config.history.ttl
        at_since = False
        kept = 0
        stale = False
        events: list[Event] = []
        try:
            if 0 < since < latest:
                with contextlib.suppress(NotFoundError):
                    at = await js.get_msg(stream, seq=since)
                    at_since = at.subject == subject
            seq = since + 1
            while seq <= last and kept <= self.config.history.size:
                try:
                    message = await js.get_msg(stream, seq=seq, subject=subject, next=True)
                except NotFoundError:
                    break
                found = int(message.seq or 0)
                if found <= 0 or found > last:
                    break
                kept += 1
                with contextlib.suppress(BadEvent):
                    event = decode_event(message.data or b"", channel, found)
                    if event.ts >= horizon:
                        events.append(event)
                    else:
                        stale = True
                seq = found + 1
        except _FAILURES as exc:
            raise BusUnavailable(str(exc) or type(exc).__name__) from None
        nothing_dropped = first_seq <= since + 1 and kept < self.config.history.size
        recovered = since <= stream_last and (at_since or nothing_dropped) and not stale
        return HistoryPage(tuple(events), recovered, latest)

    async def close(self) -> None:
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connector
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None
        self._connected = False
