"""Socket.IO at /api/v1/socket.io: python-socketio's AsyncServer as an ASGI app.

The original design's client contract: connect with `auth: {token}` (or with
the token in the cookie or query parameter /api/v1/ws reads, or send
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
from potok.realtime.bus.base import BusUnavailable, EventTooLarge
from potok.realtime.events import BadEvent, Event, make_event
from potok.realtime.history import HistoryPage, position_after
from potok.realtime.session import SessionGuard, error_code, no_longer_allowed
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
    guard: SessionGuard  # who the connection is, for how long (realtime.session)
    channels: set[str] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None
    socket: AsgiWebSocket | None = None  # set when connected over WebSocket from the start
    ended: bool = False  # the session rule ended it; the disconnect is on its way

    @property
    def principal(self) -> Principal | None:
        return None if self.ended else self.guard.principal


class _Handshake:
    """A Socket.IO handshake's headers and query string (from its ASGI scope), where the
    realtime token extractor looks for a token at connect time."""

    __slots__ = ("authorization", "headers", "query")

    def __init__(self, scope: dict[str, Any]) -> None:
        self.headers: list[tuple[bytes, bytes]] = [tuple(h) for h in scope.get("headers", ())]
        query: bytes = scope.get("query_string", b"")
        self.query = b"?" + query if query else b""
        self.authorization: bytes | None = None  # header tokens are not read at connect time


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
        self._joining: dict[str, dict[str, list[Event]]] = {}  # channel -> sid -> held events
        self._floors: dict[str, dict[str, int]] = {}  # channel -> sid -> offset it has
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
        name = event.channel
        joining = self._joining.get(name)
        if joining:  # subscribers still being sent their history get it afterwards
            for buffer in joining.values():
                buffer.append(event)
            members -= len(joining)
        skip = self._below_floor(name, event.offset) if name in self._floors else ()
        message = event.client_message()
        direct = self._direct.get(name)
        if direct:
            # Engine.IO message (4) carrying a Socket.IO EVENT (2) on the default namespace.
            frame = text_frame(b"42" + orjson.dumps([event.type, message]))
            for sid, socket in direct.items():
                if sid not in skip:
                    self._queue(sid, socket, frame)
            members -= len(direct)
        if members <= 0:
            return
        skipped = [*direct, *skip] if direct else list(skip)
        self._spawn(self.sio.emit(event.type, message, room=name, skip_sid=skipped or None))

    def _below_floor(self, channel: str, offset: int | None) -> set[str]:
        """The new subscribers that got this event already (from the history or as the
        position of their reply). Events come in offset order: once one is past a
        subscriber's floor, all later ones are, and the floor is forgotten."""
        floors = self._floors[channel]
        skip = set()
        for sid, floor in list(floors.items()):
            if offset is not None and offset <= floor:
                skip.add(sid)
            else:
                del floors[sid]
        if not floors:
            del self._floors[channel]
        return skip

    def _queue(self, sid: str, socket: AsgiWebSocket, frame: bytes) -> None:
        """Queue a frame for a direct client; `_flush` writes each one's frames at once."""
        queued = self._outbox.get(sid)
        if queued is None:
            if not self._dirty:
                asyncio.get_running_loop().call_soon(self._flush)
            self._outbox[sid] = queued = []
            self._dirty.append((sid, socket))
        queued.append(frame)

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
        client = _Client(SessionGuard(realtime.auth, lambda code, why: self._end(sid, code, why)))
        scope = environ.get("asgi.scope") or {}
        socket = scope.get(SCOPE_KEY) if scope.get("type") == "websocket" else None
        client.socket = socket if isinstance(socket, AsgiWebSocket) else None
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            # Where /api/v1/ws finds a token at connect time: the same cookie or query parameter.
            token = realtime.auth.token_at_connect(_Handshake(scope))
        if token:
            try:
                client.guard.admit(await realtime.auth.verify(token))
            except TokenRejected as exc:
                client.guard.stop()
                raise socketio.exceptions.ConnectionRefusedError(exc.reason) from None
        else:
            timeout = realtime.config.auth.timeout
            loop = asyncio.get_running_loop()
            client.timer = loop.call_later(timeout, self._auth_timed_out, sid)
        self._clients[sid] = client
        realtime.metrics.opened(TRANSPORT)

    def heartbeat(self, now: float) -> None:
        """The hub's heartbeat: the session rule checks every client's token (revocation)."""
        for client in list(self._clients.values()):
            client.guard.check()

    def _end(self, sid: str, code: str, reason: str) -> None:
        """The session rule ended `sid`'s session (expired or revoked token): no event
        reaches it from now on; it hears why, then it is disconnected."""
        client = self._clients.get(sid)
        if client is None or client.ended:
            return
        client.ended = True
        self._leave_all(sid, client)
        self._spawn(self._error_then_disconnect(sid, code, reason))

    async def _error_then_disconnect(self, sid: str, code: str, reason: str) -> None:
        await self._error(sid, code, reason)
        await self.sio.disconnect(sid)

    def _leave_all(self, sid: str, client: _Client) -> None:
        realtime = self._realtime
        for channel in client.channels:
            self.sio.manager.basic_leave_room(sid, "/", channel)
            if realtime is not None:
                realtime.hub.socketio_leave(channel)
            self._forget_direct(channel, sid)
        client.channels.clear()

    async def shutdown(self) -> None:
        """SIGTERM: every session (long-polling ones too, whose open poll would hold the
        drain for up to the ping interval) hears why and is disconnected at once."""
        for sid, client in list(self._clients.items()):
            client.ended = True
            self._leave_all(sid, client)
        sids = list(self._clients)
        if not sids:
            return
        notice = {
            "type": "error",
            "code": proto.GOING_AWAY,
            "message": "the gateway is shutting down; reconnect",
        }
        await asyncio.gather(
            *(self.sio.emit("error", notice, to=sid) for sid in sids), return_exceptions=True
        )
        await asyncio.gather(*(self.sio.disconnect(sid) for sid in sids), return_exceptions=True)

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
        client.guard.stop()
        if client.timer is not None:
            client.timer.cancel()
        self._leave_all(sid, client)
        realtime.metrics.closed(TRANSPORT)

    def _forget_direct(self, channel: str, sid: str) -> None:
        """Drop `sid` from the channel's direct sockets, held events and floors."""
        _discard(self._direct, channel, sid)
        _discard(self._joining, channel, sid)
        _discard(self._floors, channel, sid)

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
            reply = await self._error(sid, error_code(exc), exc.reason)
            self._spawn(self.sio.disconnect(sid))
            return reply
        if client.ended:
            return {"type": "error", "code": proto.NOT_AUTHENTICATED, "message": "session ended"}
        refused = client.guard.admit(principal)
        if refused is not None:
            return await self._error(sid, proto.INVALID_TOKEN, refused)
        if client.timer is not None:
            client.timer.cancel()
            client.timer = None
        reply = await self._reply(
            sid,
            "authenticated",
            {
                "sub": principal.subject,
                "org": principal.org,
                "roles": sorted(principal.roles),
                "expires_at": principal.expires_at,
            },
        )
        for channel in no_longer_allowed(realtime.rules, principal, list(client.channels)):
            self._leave(sid, client, channel)
            await self._error(
                sid, proto.FORBIDDEN, "the new token may not subscribe here", channel=channel
            )
        return reply

    def _leave(self, sid: str, client: _Client, channel: str) -> None:
        client.channels.discard(channel)
        self.sio.manager.basic_leave_room(sid, "/", channel)
        if self._realtime is not None:
            self._realtime.hub.socketio_leave(channel)
        self._forget_direct(channel, sid)

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
        if since is not None and (
            not isinstance(since, int) or isinstance(since, bool) or since < 0
        ):
            return await self._error(sid, proto.BAD_REQUEST, "'since' is an offset")
        if channel in client.channels:
            self._leave(sid, client, channel)  # a resubscribe (e.g. with `since`) starts over
        client.channels.add(channel)
        realtime.hub.socketio_join(channel)
        held: list[Event] = []
        self._joining.setdefault(channel, {})[sid] = held  # live events wait meanwhile
        reply: dict[str, Any] = {"type": "subscribed", "channel": channel}
        page: HistoryPage | None = None
        try:
            if since is None:
                reply["offset"] = await realtime.bus.latest(channel)
            else:
                page = await realtime.bus.history(channel, since)
                reply["offset"] = page.latest
        except Exception as exc:
            realtime.bus_error("history")
            log.warning("realtime history unavailable", channel=channel, error=str(exc))
            reply["offset"] = None
        if since is not None:
            reply["recovered"] = page is not None and page.recovered
        if self._clients.get(sid) is not client or channel not in client.channels:
            return reply  # gone, ended or unsubscribed meanwhile (`_leave` dropped `held`)
        position = position_after(reply["offset"], since, page)
        await self._send(sid, client, "subscribed", reply)
        for event in page.events if page is not None else ():
            await self._send(sid, client, event.type, event.client_message())
        while held:  # what arrived meanwhile, after the history, none twice
            batch = held[:]
            held.clear()
            for event in batch:
                if position is None or event.offset is None or event.offset > position:
                    await self._send(sid, client, event.type, event.client_message())
                    if event.offset is not None:
                        position = event.offset
            if self._clients.get(sid) is not client or channel not in client.channels:
                return reply
        self._go_live(sid, client, channel, position)
        return reply

    def _go_live(self, sid: str, client: _Client, channel: str, position: int | None) -> None:
        """From held events to live delivery, with no await in between (none can slip)."""
        joining = self._joining.get(channel)
        if joining is not None:
            joining.pop(sid, None)
            if not joining:
                del self._joining[channel]
        self.sio.manager.basic_enter_room(sid, "/", channel)
        if client.socket is not None:
            self._direct.setdefault(channel, {})[sid] = client.socket
        if position is not None:
            self._floors.setdefault(channel, {})[sid] = position

    async def _send(self, sid: str, client: _Client, name: str, body: dict[str, Any]) -> None:
        """One event to one client, in order with the fan-out's frames to it."""
        if client.socket is not None:
            self._queue(sid, client.socket, text_frame(b"42" + orjson.dumps([name, body])))
        else:
            await self.sio.emit(name, body, to=sid)

    async def _unsubscribe(self, sid: str, data: Any = None) -> dict[str, Any]:
        self._count_in()
        found = self._authenticated(sid)
        if found is None:
            return await self._error(sid, proto.NOT_AUTHENTICATED, "authenticate first")
        client, _ = found
        channel, _ = _channel_of(data)
        if channel is None or channel not in client.channels:
            return await self._error(sid, proto.NOT_SUBSCRIBED, "not subscribed", channel=channel)
        self._leave(sid, client, channel)
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
        except EventTooLarge as exc:
            return await self._error(sid, proto.TOO_LARGE, str(exc), max_event_bytes=exc.limit)
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


def _discard(table: dict[str, dict[str, Any]], channel: str, sid: str) -> None:
    entries = table.get(channel)
    if entries is not None:
        entries.pop(sid, None)
        if not entries:
            del table[channel]


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    message: Message = {"type": "http.response.start", "status": 404, "headers": []}
    await send(message)
    await send({"type": "http.response.body", "body": b"realtime is not enabled"})
