"""Bounded, paced load through the gateway from one asyncio loop: `concurrency` keep-alive
clients, `rate` requests per second in all, for `duration` seconds, with actions fired
at given times (kill a target at 1.5 s). Small on purpose: the machine is shared."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoadResult:
    statuses: list[tuple[float, int]] = field(default_factory=list)  # (seconds in, status)
    notes: dict[str, object] = field(default_factory=dict)  # what the actions returned

    @property
    def total(self) -> int:
        return len(self.statuses)

    @property
    def errors(self) -> list[tuple[float, int]]:
        return [(at, status) for at, status in self.statuses if status != 200]

    @property
    def error_rate(self) -> float:
        return len(self.errors) / max(1, self.total)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, keep-alive) of one response with Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    keep = True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and b"close" in value.lower():
            keep = False
    if length:
        await reader.readexactly(length)
    return status, keep


async def _client(
    port: int, path: str, interval: float, stop_at: float, started: float, result: LoadResult
) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: load.test\r\n\r\n".encode()
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    next_at = time.monotonic()
    while next_at < stop_at:
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        # Like hey -q: a tick missed while a request hung is dropped, not made up in a burst.
        next_at = max(next_at + interval, time.monotonic())
        sent_at = time.monotonic() - started
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            writer.write(request)
            status, keep = await asyncio.wait_for(_read_response(reader), 60)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            status, keep = 0, False
        result.statuses.append((sent_at, status))
        if not keep and writer is not None:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def run_load(
    port: int,
    path: str,
    *,
    concurrency: int,
    rate: float,
    duration: float,
    actions: tuple[tuple[float, str, Callable[[], object]], ...] = (),
) -> LoadResult:
    """Run the load; each action (at seconds, name, function) runs in a thread at its time."""
    result = LoadResult()
    started = time.monotonic()
    stop_at = started + duration
    interval = concurrency / rate

    async def act(at: float, name: str, function: Callable[[], object]) -> None:
        await asyncio.sleep(at)
        result.notes[name] = await asyncio.to_thread(function)

    clients = [_client(port, path, interval, stop_at, started, result) for _ in range(concurrency)]
    # Spread the clients' first requests over one interval, so the pacing is even.
    staggered = [_after(i * interval / concurrency, c) for i, c in enumerate(clients)]
    await asyncio.gather(*staggered, *(act(*action) for action in actions))
    return result


async def _after(delay: float, coroutine: Coroutine[Any, Any, None]) -> None:
    await asyncio.sleep(delay)
    await coroutine
