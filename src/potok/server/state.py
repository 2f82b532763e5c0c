"""What the connections of one listener of a worker share: settings, handler, connections."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import structlog

from potok.http.settings import ServerSettings
from potok.listening import PLAIN, ListenerView
from potok.observability.client_log import ThrottledClientLog

if TYPE_CHECKING:
    from potok.exchange import Exchange, ResponseHook

log = structlog.get_logger("potok.server")

# Connection phases (`ClientConnection.phase`), for the sweeper's timeouts: an IDLE
# keep-alive connection and a slow READING_HEAD one have the settings' deadlines, a
# TUNNEL its idle timeout; a BUSY one is answering a request, which the request's own
# deadline (the route's timer, app.py) bounds, so the sweeper leaves it alone.
IDLE, READING_HEAD, BUSY, TUNNEL = 0, 1, 2, 3


class RequestHandler(Protocol):
    """What the server calls: `handle` a request, and hear when each one is `finished`."""

    def handle(self, exchange: Exchange) -> None: ...

    def finished(self, exchange: Exchange) -> None: ...

    @property
    def answer_hooks(self) -> tuple[ResponseHook, ...]:
        """Response hooks for answers made before a route is chosen (global headers)."""
        ...


class Connection(Protocol):
    """What the sweeper and a draining worker do with an open connection (ClientConnection)."""

    @property
    def phase(self) -> int: ...

    @property
    def deadline(self) -> float: ...

    def expire(self) -> None:
        """The connection overstayed its phase's deadline."""
        ...

    def close_if_idle(self) -> None: ...

    def force_close(self) -> None: ...


class ServerState:
    """Shared by the connections of one worker process."""

    def __init__(
        self, handler: RequestHandler, settings: ServerSettings, listener: ListenerView = PLAIN
    ) -> None:
        self.handler = handler
        self.settings = settings
        self.listener = listener  # one state per listener: its connections share it
        self.connections: set[Connection] = set()
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
            for connection in [c for c in self.connections if c.phase != BUSY and c.deadline < now]:
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
