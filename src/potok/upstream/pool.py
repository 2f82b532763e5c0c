"""Idle keep-alive connections to one target, most recently used first."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from potok.upstream.connection import UpstreamConnection


class ConnectionPool:
    """LIFO, so a few hot connections serve a steady load and the rest can age out."""

    __slots__ = ("_idle", "idle_timeout", "max_idle")

    def __init__(self, max_idle: int, idle_timeout: float) -> None:
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._idle: deque[UpstreamConnection] = deque()

    def acquire(self) -> UpstreamConnection | None:
        idle = self._idle
        while idle:
            connection = idle.pop()
            if connection.closed:
                continue
            if time.monotonic() - connection.idle_since > self.idle_timeout:
                connection.close()
                continue
            return connection
        return None

    def release(self, connection: UpstreamConnection) -> None:
        connection.release()
        if connection.closed:
            return
        if len(self._idle) >= self.max_idle:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        self._idle.append(connection)

    def discard(self, connection: UpstreamConnection) -> None:
        """Forget a connection that closed while idle (the upstream timed it out)."""
        with contextlib.suppress(ValueError):
            self._idle.remove(connection)

    def prune(self) -> None:
        """Close connections idle past the timeout (the oldest sit at the left)."""
        now = time.monotonic()
        while self._idle and now - self._idle[0].idle_since > self.idle_timeout:
            self._idle.popleft().close()

    def close_all(self) -> None:
        while self._idle:
            self._idle.pop().close()

    def retire(self) -> None:
        """The target left the config: close the idle connections now, and each busy one
        when its response ends (a released connection finds no room and is closed)."""
        self.max_idle = 0
        self.close_all()

    def __len__(self) -> int:
        return len(self._idle)
