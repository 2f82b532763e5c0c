"""Redis bus: pub/sub carries live events, a capped stream per channel keeps history.

Publishing is one Lua script, atomic on the server: drop a duplicate id
(SET NX with the de-duplication window), take the next offset from one
counter, append to the channel's stream (entry id `<offset>-0`, trimmed to
`history.size`), remember the channel's latest offset, PUBLISH. Every
gateway instance PSUBSCRIBEs `<subject_prefix>.*`.

Publishers outside the gateway may run the same script (docs/realtime.md
shows how) or PUBLISH the JSON event themselves: then it is delivered live
but has no offset and no history.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from potok.realtime.bus.base import (
    BusUnavailable,
    Deliver,
    OnError,
    OnReconnect,
    Published,
    subject_for,
)
from potok.realtime.config import RealtimeConfig
from potok.realtime.events import BadEvent, Event, decode_event
from potok.realtime.history import HistoryPage

log = structlog.get_logger("potok.realtime.bus")

# KEYS: dedup key, offset counter, history stream, latest-offset key
# ARGV: payload (a JSON object), dedup seconds, history size, history ttl seconds, channel
PUBLISH_SCRIPT = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) == false then
  return -1
end
local offset = redis.call('INCR', KEYS[2])
local payload = string.sub(ARGV[1], 1, -2) .. ',"offset":' .. offset .. '}'
redis.call('SET', KEYS[4], offset, 'EX', ARGV[4])
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[3], offset .. '-0', 'e', payload)
  redis.call('EXPIRE', KEYS[3], ARGV[4])
end
redis.call('PUBLISH', ARGV[5], payload)
return offset
"""


class RedisKeys:
    """Key names, all under the `redis:` key prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def dedup(self, event_id: str) -> str:
        return f"{self.prefix}rt:dedup:{event_id}"

    @property
    def offset(self) -> str:
        return f"{self.prefix}rt:offset"

    def history(self, channel: str) -> str:
        return f"{self.prefix}rt:history:{channel}"

    def latest(self, channel: str) -> str:
        return f"{self.prefix}rt:latest:{channel}"


class RedisBus:
    name = "redis"

    def __init__(self, config: RealtimeConfig, client: Redis, key_prefix: str) -> None:
        """`client` (from `potok.redis_clients`) is the bus's own: closed with the bus. Its
        one retry is safe for publish: a repeat of an executed script is dropped as a
        duplicate."""
        self.config = config
        self.keys = RedisKeys(key_prefix)
        self.subject_prefix = config.bus.subject_prefix
        self._timeout = config.bus.redis.timeout
        self._client = client
        self._script = self._client.register_script(PUBLISH_SCRIPT)
        self._reader: asyncio.Task[None] | None = None
        self._connected = False
        self._deliver: Deliver | None = None
        self._on_error: OnError | None = None
        self._on_reconnect: OnReconnect | None = None
        self._run_id: str | None = None  # the Redis server's; a new one means its data is gone
        self._history_ttl = max(1, int(config.history.ttl))

    @property
    def connected(self) -> bool:
        return self._connected

    async def start(
        self, deliver: Deliver, on_error: OnError, on_reconnect: OnReconnect | None = None
    ) -> None:
        self._deliver = deliver
        self._on_error = on_error
        self._on_reconnect = on_reconnect
        subscribed = asyncio.get_running_loop().create_future()
        self._reader = asyncio.get_running_loop().create_task(self._read(subscribed))
        # Wait briefly for the first subscription, so events published right after start
        # are not missed; a Redis that is down does not stop the gateway from starting.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(subscribed), self._timeout)

    async def _read(self, subscribed: asyncio.Future[None]) -> None:
        pattern = f"{self.subject_prefix}.*"
        skip = len(self.subject_prefix) + 1
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(pattern)
                run_id = str((await self._client.info("server")).get("run_id", ""))
                if not self._connected:
                    log.info("redis bus subscribed", pattern=pattern)
                self._connected = True
                restarted = self._run_id is not None and run_id != self._run_id
                self._run_id = run_id
                if not subscribed.done():
                    subscribed.set_result(None)
                elif self._on_reconnect is not None:
                    # Pub/sub kept nothing while we were away: the hub fetches the history.
                    self._on_reconnect(restarted)
                async for message in pubsub.listen():
                    if message.get("type") == "pmessage":
                        self._received(message, skip)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                raise
            except (RedisError, OSError) as exc:
                if self._connected:
                    log.warning("redis bus connection lost", error=str(exc))
                self._report("connection")
                self._connected = False
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            await asyncio.sleep(self.config.bus.reconnect_interval)

    def _received(self, message: dict[str, Any], skip: int) -> None:
        channel = message["channel"]
        name = (channel.decode() if isinstance(channel, bytes) else channel)[skip:]
        try:
            event = decode_event(message["data"], name)
        except BadEvent as exc:
            log.warning("malformed event on the bus", channel=name, error=str(exc))
            self._report("malformed")
            return
        if self._deliver is not None:
            self._deliver(event)

    def _report(self, kind: str) -> None:
        if self._on_error is not None:
            self._on_error(kind)

    async def publish(self, event: Event) -> Published:
        keys = self.keys
        channel = event.channel
        try:
            async with asyncio.timeout(self._timeout):
                offset = await self._script(
                    keys=[
                        keys.dedup(event.id),
                        keys.offset,
                        keys.history(channel),
                        keys.latest(channel),
                    ],
                    args=[
                        event.bus_payload(),
                        max(1, int(self.config.dedup_window)),
                        self.config.history.size,
                        self._history_ttl,
                        subject_for(self.subject_prefix, channel),
                    ],
                )
        except (RedisError, OSError, TimeoutError) as exc:
            raise BusUnavailable(str(exc) or type(exc).__name__) from None
        if int(offset) < 0:
            return Published(None, duplicate=True)
        event.offset = int(offset)
        return Published(int(offset))

    async def latest(self, channel: str) -> int:
        try:
            async with asyncio.timeout(self._timeout):
                value = await self._client.get(self.keys.latest(channel))
        except (RedisError, OSError, TimeoutError) as exc:
            raise BusUnavailable(str(exc) or type(exc).__name__) from None
        return int(value) if value is not None else 0

    async def history(self, channel: str, since: int) -> HistoryPage:
        stream = self.keys.history(channel)
        try:
            async with asyncio.timeout(self._timeout):
                pipe = self._client.pipeline(transaction=False)
                pipe.get(self.keys.latest(channel))
                pipe.xrange(stream, min=f"{since}-0", max=f"{since}-0", count=1)
                pipe.xrange(stream, min=f"{since + 1}-0", max="+")
                if since == 0:
                    pipe.exists(stream)
                latest_raw, at_since, after, *exists = await pipe.execute()
                added = await self._entries_added(stream) if exists and exists[0] else 0
        except (RedisError, OSError, TimeoutError) as exc:
            raise BusUnavailable(str(exc) or type(exc).__name__) from None
        latest = int(latest_raw) if latest_raw is not None else 0
        if since == latest:
            return HistoryPage((), True, latest)
        events: list[Event] = []
        horizon = time.time() - self.config.history.ttl
        for entry_id, fields in after:
            offset = int(entry_id.split(b"-")[0])
            try:
                event = decode_event(fields[b"e"], channel, offset)
            except (BadEvent, KeyError):
                continue
            if event.ts >= horizon:
                events.append(event)
        if since == 0:
            # From the channel's start: recovered while the stream has lost nothing
            # (every entry ever added is still there, and fresh).
            return HistoryPage(tuple(events), 0 < len(events) == added, latest)
        recovered = since < latest and any(
            _fresh(fields, channel, horizon) for _, fields in at_since
        )
        return HistoryPage(tuple(events), recovered, latest)

    async def _entries_added(self, stream: str) -> int:
        """How many entries the stream ever had (Redis 7: XINFO STREAM entries-added)."""
        info: dict[Any, Any] = await self._client.xinfo_stream(stream)
        value = info.get("entries-added", info.get(b"entries-added"))
        return int(value) if value is not None else -1  # older Redis: cannot tell, not recovered

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        with contextlib.suppress(Exception):
            await self._client.aclose()


def _fresh(fields: dict[bytes, bytes], channel: str, horizon: float) -> bool:
    try:
        return decode_event(fields[b"e"], channel).ts >= horizon
    except (BadEvent, KeyError):
        return False
