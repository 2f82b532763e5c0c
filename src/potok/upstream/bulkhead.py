"""A bulkhead: a cap on a service's concurrent upstream requests, with a bounded queue."""

from __future__ import annotations

import asyncio
from collections import deque


class BulkheadFull(Exception):
    """No slot, and no room (or no time) to wait for one."""


class Bulkhead:
    __slots__ = ("_queue", "in_use", "max_concurrent", "max_queued", "queue_timeout")

    def __init__(self, max_concurrent: int, max_queued: int, queue_timeout: float) -> None:
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.queue_timeout = queue_timeout
        self.in_use = 0
        self._queue: deque[asyncio.Future[None]] = deque()

    def try_acquire(self) -> bool:
        if self.in_use < self.max_concurrent and not self._queue:
            self.in_use += 1
            return True
        return False

    async def acquire(self) -> None:
        """Wait for a slot, within the queue bound and the timeout."""
        if self.try_acquire():
            return
        if len(self._queue) >= self.max_queued:
            raise BulkheadFull("the service's request queue is full")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        try:
            async with asyncio.timeout(self.queue_timeout):
                await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot arrived just as time ran out: pass it on
            raise BulkheadFull("waited too long for a free slot") from None
        finally:
            if not waiter.done():
                waiter.cancel()
            if waiter in self._queue:
                self._queue.remove(waiter)
        # The releaser handed its slot to us (in_use unchanged).

    def release(self) -> None:
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next in line
                return
        self.in_use -= 1

    @property
    def queued(self) -> int:
        return len(self._queue)
