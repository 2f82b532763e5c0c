"""The ASGI bridge's WebSocket scope (ASGI 3.0, websocket spec 2.3), on send_switching.

Used for the own API's WebSocket endpoints (Socket.IO). The app sees
`websocket.connect`, then `websocket.receive` per message and finally
`websocket.disconnect`; it answers `websocket.accept` (the 101 is sent
then), `websocket.send`, `websocket.close` (before accept: 403).

Bounded both ways: incoming messages wait in a small queue (reading from the
client pauses while it is full); outgoing ones go to the transport, or wait in
the endpoint's queue while the transport is full, and a client whose unsent
bytes pass `send_buffer` has them dropped and is closed with 1013 at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

import structlog

from potok.server.websocket import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_TRY_AGAIN_LATER,
    WebSocketEndpoint,
    handshake,
)

if TYPE_CHECKING:
    from potok.exchange import Exchange
    from potok.server.asgi import AsgiApp, Message, Scope

log = structlog.get_logger("potok.asgi")

# The scope key under which an app finds the AsgiWebSocket serving it (an extension).
SCOPE_KEY = "potok.websocket"


@dataclass
class WebSocketLimits:
    """Bounds of one ASGI WebSocket connection."""

    send_buffer: int = 1024 * 1024
    max_message_bytes: int = 1024 * 1024
    receive_queue: int = 64
    close_timeout: float = 5.0
    on_slow_consumer: Callable[[], None] | None = None
    on_open: Callable[[], None] | None = None
    on_close: Callable[[], None] | None = None


class AsgiWebSockets:
    """The open ASGI WebSocket connections of one bridge (closed with 1001 at shutdown)."""

    def __init__(self) -> None:
        self.limits = WebSocketLimits()
        self.open: set[AsgiWebSocket] = set()

    def run(self, app: AsgiApp, scope: Scope, exchange: Exchange) -> asyncio.Task[None]:
        socket = AsgiWebSocket(self, exchange)
        scope[SCOPE_KEY] = socket  # lets the app write pre-encoded frames (send_frame)
        return asyncio.get_running_loop().create_task(socket.run(app, scope))

    def going_away(self) -> None:
        for socket in list(self.open):
            socket.close_with(CLOSE_GOING_AWAY, "server shutting down", timeout=1.0)


def websocket_scope(http_scope: Scope, exchange: Exchange) -> Scope:
    """The websocket scope for an upgrade request, from the bridge's HTTP scope."""
    headers = list(http_scope["headers"])
    headers.append((b"upgrade", exchange.upgrade or b"websocket"))
    headers.append((b"connection", b"Upgrade"))
    subprotocols: list[str] = []
    for name, value in exchange.headers:
        if name.lower() == b"sec-websocket-protocol":
            subprotocols.extend(p.strip() for p in value.decode("latin-1").split(",") if p.strip())
    path = exchange.path
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": exchange.version,
        "scheme": "wss" if exchange.scheme == b"https" else "ws",
        "path": unquote(path.decode("latin-1")),
        "raw_path": path,
        "query_string": exchange.query[1:],
        "root_path": "",
        "headers": headers,
        "client": http_scope["client"],
        "server": http_scope["server"],
        "subprotocols": subprotocols,
        "state": http_scope["state"],
    }


class AsgiWebSocket(WebSocketEndpoint):
    def __init__(self, owner: AsgiWebSockets, exchange: Exchange) -> None:
        # Not switched yet: the protocol object exists once the app accepts.
        self.owner = owner
        self.limits = owner.limits
        self.exchange: Exchange | None = exchange
        self.accepted = False
        self._incoming: deque[Message] = deque([{"type": "websocket.connect"}])
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._disconnected = False
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.closing = False
        self.close_code: int | None = None
        exchange.on_cancel = self._gone_before_accept

    # The app's side --------------------------------------------------------------

    async def run(self, app: AsgiApp, scope: Scope) -> None:
        try:
            await app(scope, self.receive, self.send)
        except Exception as exc:
            log.error("own API WebSocket handler failed", path=scope["path"], exc_info=exc)
            if self.accepted:
                self.close_with(CLOSE_INTERNAL, "internal error")
            else:
                self._refuse(500, "internal error in the gateway's API")
            return
        if not self.accepted:
            self._refuse(403, "the WebSocket was not accepted")
        elif not self.closing:
            self.close_with(1000, "")

    async def receive(self) -> Message:
        while not self._incoming:
            if self._disconnected:
                return {"type": "websocket.disconnect", "code": self.close_code or 1006}
            self._waiter = self.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._incoming.popleft()
        if self._paused and len(self._incoming) < self.limits.receive_queue // 2:
            self._paused = False
            self.connection.resume_reading()
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            self._accept(message)
        elif kind == "websocket.send":
            if not self.accepted:
                raise RuntimeError("websocket.send before websocket.accept")
            if self.closed or self.closing:
                return  # the client is gone; the app learns it from receive()
            text = message.get("text")
            if text is not None:
                self.protocol.send_text(text.encode())
            else:
                self.protocol.send_binary(bytes(message.get("bytes") or b""))
            self._write_checked(b"".join(self.protocol.data_to_send()))
        elif kind == "websocket.close":
            if not self.accepted:
                self._refuse(403, str(message.get("reason") or "WebSocket refused"))
            else:
                self.close_with(
                    int(message.get("code", 1000)),
                    str(message.get("reason") or ""),
                    timeout=self.limits.close_timeout,
                )

    def send_frame(self, frame: bytes) -> None:
        """Write one pre-encoded server frame (the same bytes for many clients), with the
        slow-consumer check of `websocket.send`."""
        if not self.accepted or self.closed or self.closing:
            return
        self._write_checked(frame)

    def _write_checked(self, data: bytes) -> None:
        if not self.write_frames(data):
            if self.limits.on_slow_consumer is not None:
                self.limits.on_slow_consumer()
            self.cut_off(CLOSE_TRY_AGAIN_LATER, "slow consumer", timeout=self.limits.close_timeout)

    def _accept(self, message: Message) -> None:
        exchange = self.exchange
        if self.accepted or exchange is None or not exchange.is_current():
            return
        subprotocol = message.get("subprotocol")
        accepted = handshake(
            exchange,
            max_size=self.limits.max_message_bytes,
            subprotocols=[subprotocol] if subprotocol else None,
        )
        if accepted is None:
            self._disconnected = True
            self.exchange = None
            return
        protocol, headers = accepted
        exchange.on_cancel = None
        extra = [(bytes(n), bytes(v)) for n, v in message.get("headers", ())]
        WebSocketEndpoint.__init__(self, exchange.connection, protocol)
        self.send_limit = self.limits.send_buffer
        self.accepted = True
        self.exchange = None
        self.owner.open.add(self)
        if self.limits.on_open is not None:
            self.limits.on_open()
        exchange.switch_protocols(headers + extra, self)

    def _gone_before_accept(self) -> None:
        self.exchange = None
        self._disconnected = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _refuse(self, status: int, detail: str) -> None:
        exchange, self.exchange = self.exchange, None
        if exchange is not None and exchange.is_current():
            exchange.problem(status, detail)

    # The client's side ---------------------------------------------------------------

    def _push(self, message: Message) -> None:
        self._incoming.append(message)
        if not self._paused and len(self._incoming) >= self.limits.receive_queue:
            self._paused = True
            self.connection.pause_reading()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def on_text(self, data: bytes) -> None:
        self._push({"type": "websocket.receive", "text": data.decode()})

    def on_binary(self, data: bytes) -> None:
        self._push({"type": "websocket.receive", "bytes": data})

    def on_closed(self, code: int) -> None:
        self.close_code = code
        self._disconnected = True
        self.owner.open.discard(self)
        if self.limits.on_close is not None:
            self.limits.on_close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
