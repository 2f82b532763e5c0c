"""Serve a plain ASGI app on Potok's own HTTP server (used by the demo services)."""

from __future__ import annotations

import asyncio
import signal

from potok.exchange import Exchange, ResponseHook
from potok.http.settings import ServerSettings
from potok.server.asgi import AsgiApp, AsgiBridge
from potok.server.connection import ClientConnection
from potok.server.listener import listening_socket
from potok.server.state import ServerState


class _AsgiOnly:
    """A request handler that sends everything to one ASGI app."""

    def __init__(self, bridge: AsgiBridge) -> None:
        self._bridge = bridge

    def handle(self, exchange: Exchange) -> None:
        exchange.client_ip = exchange.peer_ip
        self._bridge(exchange)

    def finished(self, exchange: Exchange) -> None:
        pass

    @property
    def answer_hooks(self) -> tuple[ResponseHook, ...]:
        return ()  # no policies: plain ASGI apps set their own headers


async def serve_asgi(app: AsgiApp, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    state = ServerState(_AsgiOnly(AsgiBridge(app, (host, port))), ServerSettings())
    backlog = 2048
    server = await loop.create_server(
        lambda: ClientConnection(state), sock=listening_socket(host, port, backlog), backlog=backlog
    )
    state.start_sweeper()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    state.stop_sweeper()
