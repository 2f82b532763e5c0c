"""How a demo service tells the gateway about a change: POST /api/v1/events with its key.

Fire and forget: a request that changed a task is answered at once; the event
goes out in the background (bounded: at most `MAX_PENDING` in flight, then
new events are dropped with a message on stderr), as a small HTTP/1.1 client
on asyncio streams, so the demo services need no HTTP client library.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any
from urllib.parse import urlsplit

import orjson

EVENTS_URL_ENV = "POTOK_EVENTS_URL"
EVENTS_KEY_ENV = "POTOK_EVENTS_KEY"
MAX_PENDING = 100
TIMEOUT = 5.0


class EventPublisher:
    def __init__(self, url: str, key: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = parts.path or "/api/v1/events"
        self.key = key
        self._pending: set[asyncio.Task[None]] = set()

    def publish(self, channel: str, event_type: str, data: Any, event_id: str) -> None:
        if len(self._pending) >= MAX_PENDING:
            print(f"events: dropped {event_type} (too many in flight)", file=sys.stderr)
            return
        body = orjson.dumps({"channel": channel, "type": event_type, "data": data, "id": event_id})
        task = asyncio.get_running_loop().create_task(self._post(body, event_type))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _post(self, body: bytes, event_type: str) -> None:
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"X-API-Key: {self.key}\r\nConnection: close\r\n\r\n"
        ).encode()
        try:
            async with asyncio.timeout(TIMEOUT):
                reader, writer = await asyncio.open_connection(self.host, self.port)
                writer.write(head + body)
                status_line = await reader.readline()
                writer.close()
        except (OSError, TimeoutError) as exc:
            print(f"events: {event_type} not published: {exc}", file=sys.stderr)
            return
        if b" 202 " not in status_line:
            print(f"events: {event_type} refused: {status_line.decode().strip()}", file=sys.stderr)


def publisher_from_env() -> EventPublisher | None:
    """The publisher `potok demo` configures through the environment (None: not configured)."""
    url = os.environ.get(EVENTS_URL_ENV)
    key = os.environ.get(EVENTS_KEY_ENV)
    return EventPublisher(url, key) if url and key else None
