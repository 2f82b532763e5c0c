"""What every connection of one worker shares: settings, the handler, the connection set."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from potok.observability.client_log import ThrottledClientLog

if TYPE_CHECKING:
    from potok.server.connection import ClientConnection, RequestHandler

log = structlog.get_logger("potok.server")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Plain numbers read by the connections (no pydantic on the hot path)."""

    header_read_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    max_url_bytes: int = 8192
    max_header_bytes: int = 16384
    max_headers: int = 100
    max_body_bytes: int = 5 * 1024 * 1024
    # Request headers only the gateway sets (the identity headers), lower-case: dropped
    # while parsing, so no route ever sees a client's copy.
    dropped_headers: frozenset[bytes] = frozenset()

    @property
    def max_head_total(self) -> int:
        # Raw bytes allowed while a head is incomplete: a single huge header value
        # is otherwise held whole by the parser before any callback sees it.
        return self.max_url_bytes + self.max_header_bytes + 4096


class ServerState:
    """Shared by the connections of one worker process."""

    def __init__(self, handler: RequestHandler, settings: ServerSettings) -> None:
        self.handler = handler
        self.settings = settings
        self.connections: set[ClientConnection] = set()
        self.draining = False
        self.loop = asyncio.get_running_loop()
        self.loop_time = self.loop.time
        self._sweeper: asyncio.TimerHandle | None = None
        self.on_refusal: Callable[[int], None] | None = None
        # At most a few lines per client per second, then one "suppressed" count.
        self.refusals = ThrottledClientLog(log, "request refused")

    def start_sweeper(self, interval: float = 1.0) -> None:
        """Timeouts of idle and slow connections are checked here, not with a timer each."""

        def sweep() -> None:
            now = self.loop_time()
            for connection in [c for c in self.connections if c.phase != 2 and c.deadline < now]:
                connection.expire()
            self._sweeper = self.loop.call_later(interval, sweep)

        self._sweeper = self.loop.call_later(interval, sweep)

    def stop_sweeper(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def log_error(self, event: str, exc: BaseException | None = None) -> None:
        log.error(event, exc_info=exc)

    def log_refusal(self, peer: str, status: int, detail: str) -> None:
        if self.on_refusal is not None:
            self.on_refusal(status)
        self.refusals.info(peer, status=status, detail=detail)
