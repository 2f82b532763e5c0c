"""Socket.IO at /api/v1/socket.io: python-socketio's AsyncServer as an ASGI app.

The original design's client contract: connect with `auth: {token}` (or send
`authenticate {token}` within the auth timeout), then `subscribe {channel,
since?}`, `unsubscribe {channel}`, `message {channel, event?, data}`. Events
arrive as Socket.IO events named by their type (`task:created`, ...), with the
same body as the plain protocol's `event` message. Replies are both the
handler's acknowledgement and an event of the reply's type (`authenticated`,
`subscribed`, `unsubscribed`, `published`, `error`). Channel rules are the
same as on /api/v1/ws.

Each channel is a Socket.IO room. Clients that connected over WebSocket
directly (the common case for non-browser clients and `transports:
["websocket"]`) get one pre-encoded frame per event written straight to their
connection, as on /api/v1/ws; the rest (long-polling, or upgraded from it)
get the event from python-socketio's room emit, which encodes it once too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import socketio
import structlog

from potok.identity.principal import Principal
from potok.identity.verifier import TokenRejected
from potok.realtime import protocol as proto
from potok.realtime.bus.base import BusUnavailable
from potok.realtime.events import BadEvent, Event, make_event
from potok.server.asgi_websocket import SCOPE_KEY, AsgiWebSocket
from potok.server.websocket import text_frame

if TYPE_CHECKING:
    from potok.realtime.service import Realtime
    from potok.runtime import Runtime
    from potok.server.asgi import Message, Receive, Scope, Send

log = structlog.get_logger("potok.realtime.socketio")

PATH = "/api/v1/socket.io"
TRANSPORT = "socketio"


@dataclass
class _Client:
    principal: Principal | None = None
    channels: set[str] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None
    socket: AsgiWebSocket | None = None  # set when connected over WebSocket from the start


def _channel_of(data: Any) -> tuple[str | None, dict[str, Any]]:
    if isinstance(data, str):
        return data, {}
    if isinstance(data, dict):
        channel = data.get("channel")
        return (channel if isinstance(channel, str) else None), data
    return None, {}


class SocketIoGateway:
    """The Socket.IO server and its hub sink; resolves the worker's realtime lazily."""

    def __init__(self, runtime: Callable[[], Runtime]) -> None:
        self._runtime = runtime
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            cors_allowed_origins=[],
            logger=False,
            engineio_logger=False,
            ping_interval=25,
            ping_timeout=20,
        )
        self._app = socketio.ASGIApp(self.sio, socketio_path=PATH.lstrip("/"))
        self._realtime: Realtime | None = None
        self._clients: dict[str, _Client] = {}
        self._direct: dict[str, dict[str, AsgiWebSocket]] = {}  # channel -> sid -> socket
        self._outbox: dict[str, list[bytes]] = {}  # sid -> frames queued in this iteration
        self._dirty: list[tuple[str, AsgiWebSocket]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        sio = self.sio
        sio.on("connect", self._connect)
        sio.on("disconnect", self._disconnect)
        sio.on("authenticate", self._authenticate)
        sio.on("subscribe", self._subscribe)
        sio.on("unsubscribe", self._unsubscribe)
        sio.on("message", self._message)

    # ASGI -------------------------------------------------------------------------

    def _bind(self) -> Realtime | None:
        realtime = self._runtime().realtime
        if realtime is None or not realtime.config.socketio.enabled:
            return None
        if self._realtime is not realtime:
            self._realtime = realtime
            origins = list(realtime.config.socketio.cors_allowed_origins)
            self.sio.eio.cors_allowed_origins = origins or None  # None: same origin only
            self.sio.eio.max_http_buffer_size = realtime.config.limits.max_message_bytes
            realtime.hub.socketio = self
        return realtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._bind() is None:
            await _not_found(scope, receive, send)
            return
        await self._app(scope, receive, send)

    # Hub sink ------------------------------------------------------------------------

    def emit(self, event: Event, members: int) -> None:
        realtime = self._realtime
        if realtime is not None:
            realtime.metrics.messages_out.inc((TRANSPORT,), members)
        message = event.client_message()
        direct = self._direct.get(event.channel)
        if direct:
            # Engine.IO message (4) carrying a Socket.IO EVENT (2) on the default namespace.
            frame = text_frame(b"42" + orjson.dumps([event.type, message]))
            dirty = self._dirty
            if not dirty:
                asyncio.get_running_loop().call_soon(self._flush)
            for sid, socket in direct.items():
                queued = self._outbox.get(sid)
                if queued is None:
                    self._outbox[sid] = queued = []
                    dirty.append((sid, socket))
                queued.append(frame)
            if members <= len(direct):
                return
        self._spawn(
            self.sio.emit(
                event.type, message, room=event.channel, skip_sid=list(direct) if direct else None
            )
        )

    def _flush(self) -> None:
        """One write per connection for the frames queued in this loop iteration."""
        dirty, self._dirty = self._dirty, []
        outbox, self._outbox = self._outbox, {}
        for sid, socket in dirty:
            frames = outbox[sid]
            socket.send_frame(frames[0] if len(frames) == 1 else b"".join(frames))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Handlers -----------------------------------------------------------------------

    async def _reply(self, sid: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        message = {"type": kind, **body}
        await self.sio.emit(kind, message, to=sid)
        return message

    async def _error(self, sid: str, code: str, text: str, **extra: Any) -> dict[str, Any]:
        return await self._reply(sid, "error", {"code": code, "message": text, **extra})

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        realtime = self._bind()
        if realtime is None:
            raise socketio.exceptions.ConnectionRefusedError("realtime is not enabled")
        client = _Client()
        scope = environ.get("asgi.scope") or {}
        socket = scope.get(SCOPE_KEY) if scope.get("type") == "websocket" else None
        client.socket = socket if isinstance(socket, AsgiWebSocket) else None
        token = auth.get("token") if isinstance(auth, dict) else None
        if isinstance(token, str) and token:
            try:
                client.principal = await realtime.auth.verify(token)
            except TokenRejected as exc:
                raise socketio.exceptions.ConnectionRefusedError(exc.reason) from None
        else:
            timeout = realtime.config.auth.timeout
            loop = asyncio.get_running_loop()
            client.timer = loop.call_later(timeout, self._auth_timed_out, sid)
        self._clients[sid] = client
        realtime.metrics.opened(TRANSPORT)

    def _auth_timed_out(self, sid: str) -> None:
        client = self._clients.get(sid)
        if client is not None and client.principal is None:
            self._spawn(self._drop_unauthenticated(sid))

    async def _drop_unauthenticated(self, sid: str) -> None:
        await self._error(sid, proto.NOT_AUTHENTICATED, "authentication timeout")
        await self.sio.disconnect(sid)

    async def _disconnect(self, sid: str, *args: Any) -> None:
        client = self._clients.pop(sid, None)
        realtime = self._realtime
        if client is None or realtime is None:
            return
        if client.timer is not None:
            client.timer.cancel()
        for channel in client.channels:
            realtime.hub.socketio_leave(channel)
            self._forget_direct(channel, sid)
        client.channels.clear()
        realtime.metrics.closed(TRANSPORT)

    def _forget_direct(self, channel: str, sid: str) -> None:
        direct = self._direct.get(channel)
        if direct is not None:
            direct.pop(sid, None)
            if not direct:
                del self._direct[channel]

    def _count_in(self) -> None:
        if self._realtime is not None:
            self._realtime.metrics.messages_in.inc((TRANSPORT,))

    async def _authenticate(self, sid: str, data: Any = None) -> dict[str, Any]:
        self._count_in()
        client = self._clients.get(sid)
        realtime = self._realtime
        if client is None or realtime is None:
            return {"type": "error", "code": proto.NOT_AUTHENTICATED, "message": "not connected"}
        token = data.get("token") if isinstance(data, dict) else data
        if not isinstance(token, str) or not token:
            return await self._error(sid, proto.BAD_REQUEST, "authenticate needs a 'token'")
        try:
            principal = await realtime.auth.verify(token)
        except TokenRejected as exc:
            code = proto.TOKEN_EXPIRED if exc.reason == "token expired" else proto.INVALID_TOKEN
            reply = await self._error(sid, code, exc.reason)
            self._spawn(self.sio.disconnect(sid))
            return reply
        if client.principal is not None and client.principal.subject != principal.subject:
            return await self._error(
                sid, proto.INVALID_TOKEN, "a connection cannot change its identity"
            )
        client.principal = principal
        if client.timer is not None:
            client.timer.cancel()
            client.timer = None
        return await self._reply(
            sid,
            "authenticated",
            {"sub": principal.subject, "org": principal.org, "roles": sorted(principal.roles)},
        )

    def _authenticated(self, sid: str) -> tuple[_Client, Realtime] | None:
        client = self._clients.get(sid)
        realtime = self._realtime
        if client is None or realtime is None or client.principal is None:
            return None
        return client, realtime

    async def _subscribe(self, sid: str, data: Any = None) -> dict[str, Any]:
        self._count_in()
        found = self._authenticated(sid)
        if found is None:
            return await self._error(sid, proto.NOT_AUTHENTICATED, "authenticate first")
        client, realtime = found
        channel, body = _channel_of(data)
        if channel is None:
            return await self._error(sid, proto.BAD_REQUEST, "subscribe needs a 'channel'")
        assert client.principal is not None
        decision = realtime.rules.decide(channel, client.principal, "subscribe")
        if not decision.allowed:
            return await self._error(sid, proto.FORBIDDEN, decision.reason, channel=channel)
        if (
            channel not in client.channels
            and len(client.channels) >= realtime.config.limits.max_subscriptions
        ):
            return await self._error(
                sid, proto.TOO_MANY_SUBSCRIPTIONS, "subscription limit reached", channel=channel
            )
        since = body.get("since")
        if since is not None and (not isinstance(since, int) or isinstance(since, bool)):
            return await self._error(sid, proto.BAD_REQUEST, "'since' is an offset")
        if channel not in client.channels:
            client.channels.add(channel)
            await self.sio.enter_room(sid, channel)
            realtime.hub.socketio_join(channel)
            if client.socket is not None:
                self._direct.setdefault(channel, {})[sid] = client.socket
        reply: dict[str, Any] = {"channel": channel}
        try:
            if since is None:
                reply["offset"] = await realtime.bus.latest(channel)
            else:
                page = await realtime.bus.history(channel, since)
                reply["offset"] = page.latest
                reply["recovered"] = page.recovered
                answer = await self._reply(sid, "subscribed", reply)
                for event in page.events:
                    await self.sio.emit(event.type, event.client_message(), to=sid)
                return answer
        except Exception as exc:
            realtime.bus_error("history")
            log.warning("realtime history unavailable", channel=channel, error=str(exc))
            reply["offset"] = None
            if since is not None:
                reply["recovered"] = False
        return await self._reply(sid, "subscribed", reply)

    async def _unsubscribe(self, sid: str, data: Any = None) -> dict[str, Any]:
        self._count_in()
        found = self._authenticated(sid)
        if found is None:
            return await self._error(sid, proto.NOT_AUTHENTICATED, "authenticate first")
        client, realtime = found
        channel, _ = _channel_of(data)
        if channel is None or channel not in client.channels:
            return await self._error(sid, proto.NOT_SUBSCRIBED, "not subscribed", channel=channel)
        client.channels.discard(channel)
        await self.sio.leave_room(sid, channel)
        realtime.hub.socketio_leave(channel)
        self._forget_direct(channel, sid)
        return await self._reply(sid, "unsubscribed", {"channel": channel})

    async def _message(self, sid: str, data: Any = None) -> dict[str, Any]:
        self._count_in()
        found = self._authenticated(sid)
        if found is None:
            return await self._error(sid, proto.NOT_AUTHENTICATED, "authenticate first")
        client, realtime = found
        channel, body = _channel_of(data)
        if channel is None:
            return await self._error(sid, proto.BAD_REQUEST, "message needs a 'channel'")
        assert client.principal is not None
        decision = realtime.rules.decide(channel, client.principal, "publish")
        if not decision.allowed:
            return await self._error(sid, proto.FORBIDDEN, decision.reason, channel=channel)
        try:
            event = make_event(channel, body.get("event", "message"), body.get("data"))
            published = await realtime.publish(event, TRANSPORT)
        except BadEvent as exc:
            return await self._error(sid, proto.BAD_REQUEST, str(exc))
        except BusUnavailable:
            return await self._error(sid, proto.BUS_UNAVAILABLE, "the event bus is unavailable")
        return await self._reply(
            sid,
            "published",
            {
                "channel": channel,
                "id": event.id,
                "offset": published.offset,
                "duplicate": published.duplicate,
            },
        )


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    message: Message = {"type": "http.response.start", "status": 404, "headers": []}
    await send(message)
    await send({"type": "http.response.body", "body": b"realtime is not enabled"})
