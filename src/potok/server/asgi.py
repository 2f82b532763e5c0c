"""A small ASGI (HTTP scope) bridge, so the gateway's own API can be a Starlette app.

Only the own endpoints use it; proxied requests never pass through here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import structlog

from potok.server.asgi_websocket import AsgiWebSockets, websocket_scope

if TYPE_CHECKING:
    from potok.exchange import Exchange

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = structlog.get_logger("potok.asgi")


class AsgiBridge:
    """Runs an ASGI app for an exchange: a terminal stage of the pipeline."""

    def __init__(self, app: AsgiApp, server: tuple[str, int] | None = None) -> None:
        self.app = app
        self.server = server
        self._tasks: set[asyncio.Task[None]] = set()
        self.websockets = AsgiWebSockets()  # the WebSocket scope (server/asgi_websocket.py)

    def __call__(self, exchange: Exchange) -> None:
        if exchange.upgrade is not None and exchange.upgrade.lower() == b"websocket":
            scope = websocket_scope(self.scope_for(exchange), exchange)
            task = self.websockets.run(self.app, scope, exchange)
        else:
            task = asyncio.get_running_loop().create_task(self._run(exchange))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def scope_for(self, exchange: Exchange) -> Scope:
        path = exchange.path
        headers = [(name.lower(), value) for name, value in exchange.headers]
        headers.append((b"host", exchange.host))
        headers.append((b"x-request-id", exchange.request_id.encode()))
        if exchange.content_length is not None:
            headers.append((b"content-length", str(exchange.content_length).encode()))
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": exchange.version,
            # HEAD works wherever GET does: the app answers a GET, the body is not sent.
            "method": "GET" if exchange.method == b"HEAD" else exchange.method.decode("latin-1"),
            "scheme": "https" if exchange.scheme == b"https" else "http",
            "path": unquote(path.decode("latin-1")),
            "raw_path": path,
            "query_string": exchange.query[1:],
            "root_path": "",
            "headers": headers,
            "client": (exchange.client_ip, 0),
            "server": self.server,
            "state": {"exchange": exchange},
        }

    async def _run(self, exchange: Exchange) -> None:
        scope = self.scope_for(exchange)
        response = _Response(exchange)

        async def receive() -> Message:
            if response.finished or not exchange.is_current():
                return {"type": "http.disconnect"}
            data = await exchange.body.read()
            more = not exchange.body.complete
            if not data and not more and response.body_read:
                # Asked again after the whole body: wait until the client leaves.
                await response.gone.wait()
                return {"type": "http.disconnect"}
            response.body_read = not more
            return {"type": "http.request", "body": data, "more_body": more}

        try:
            await self.app(scope, receive, response.send)
        except Exception as exc:
            log.error("own API handler failed", path=scope["path"], exc_info=exc)
            if not exchange.response_started:
                exchange.problem(500, "internal error in the gateway's API")
            else:
                exchange.abort("own API handler failed")
            return
        finally:
            response.gone.set()
        if not response.finished and exchange.is_current():
            if exchange.response_started:
                exchange.end()
            else:
                exchange.problem(500, "the gateway's API sent no response")


class _Response:
    __slots__ = ("body_read", "exchange", "finished", "gone")

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.finished = False
        self.body_read = False
        self.gone = asyncio.Event()

    async def send(self, message: Message) -> None:
        exchange = self.exchange
        if self.finished or not exchange.is_current():
            return
        kind = message["type"]
        if kind == "http.response.start":
            headers = [(bytes(n), bytes(v)) for n, v in message.get("headers", ())]
            length = None
            kept = []
            for name, value in headers:
                lower = name.lower()
                if lower == b"content-length":
                    length = int(value)
                elif lower not in (b"transfer-encoding", b"connection", b"x-request-id"):
                    kept.append((name, value))
            route = exchange.route
            if route is not None:
                # The own API's route policies (CORS, security headers) shape its answers too.
                for hook in route.pipeline.response_hooks:
                    kept = hook(exchange, kept)
            status = int(message["status"])
            has_body = exchange.method != b"HEAD" and status not in (204, 304)
            exchange.send_head(status, kept, length=length, body=has_body)
        elif kind == "http.response.body":
            body = message.get("body", b"")
            if body and exchange.method != b"HEAD":
                exchange.send_body(body)
            if message.get("more_body", False):
                await exchange.drain()
            else:
                self.finished = True
                exchange.end()
