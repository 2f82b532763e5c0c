"""/api/v1/ws: the handshake (a route terminal) and one session per connection."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog

from potok.identity.principal import Principal
from potok.identity.verifier import TokenRejected
from potok.realtime import protocol as proto
from potok.realtime.bus.base import BusUnavailable, EventTooLarge
from potok.realtime.events import BadEvent, Event, make_event
from potok.realtime.history import HistoryPage, position_after
from potok.realtime.session import SessionGuard, error_code, no_longer_allowed
from potok.server.websocket import (
    CLOSE_GOING_AWAY,
    CLOSE_TRY_AGAIN_LATER,
    WebSocketEndpoint,
    handshake,
    is_websocket_upgrade,
    text_frame,
)

if TYPE_CHECKING:
    from websockets.server import ServerProtocol

    from potok.exchange import Exchange, Responder
    from potok.realtime.service import Realtime

log = structlog.get_logger("potok.realtime")

TRANSPORT = "websocket"


class RealtimeEndpoint:
    """The terminal stage of the /api/v1/ws route: check the handshake, then switch."""

    def __init__(self, realtime: Realtime) -> None:
        self.realtime = realtime

    def __call__(self, exchange: Exchange) -> None:
        realtime = self.realtime
        if exchange.method != b"GET" or not is_websocket_upgrade(exchange):
            exchange.problem(
                426,
                "this endpoint speaks WebSocket",
                title="Upgrade Required",
                headers=((b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")),
            )
            return
        if realtime.hub.closing:
            exchange.problem(503, "the gateway is shutting down")
            return
        token = realtime.auth.token_at_connect(exchange)
        if token is None:
            self._switch(exchange, None)
            return
        task = asyncio.get_running_loop().create_task(self._verify_then_switch(exchange, token))
        realtime.tasks.add(task)
        task.add_done_callback(realtime.tasks.discard)

    async def _verify_then_switch(self, exchange: Exchange, token: str) -> None:
        try:
            principal = await self.realtime.auth.verify(token)
        except TokenRejected as exc:
            if exchange.is_current():
                exchange.problem(
                    401,
                    exc.reason,
                    headers=((b"WWW-Authenticate", b'Bearer error="invalid_token"'),),
                )
            return
        if exchange.is_current():
            self._switch(exchange, principal)

    def _switch(self, exchange: Exchange, principal: Principal | None) -> None:
        realtime = self.realtime
        accepted = handshake(
            exchange,
            max_size=realtime.config.limits.max_message_bytes,
            origins=realtime.config.allowed_origins or None,
        )
        if accepted is None:
            return
        protocol, headers = accepted
        session = RealtimeSession(realtime, exchange.connection, protocol, principal)
        exchange.switch_protocols(headers, session)
        session.opened()


class RealtimeSession(WebSocketEndpoint):
    """One client of /api/v1/ws: its identity, its channels, the protocol's replies."""

    def __init__(
        self,
        realtime: Realtime,
        connection: Responder,
        protocol: ServerProtocol,
        principal: Principal | None,
    ) -> None:
        super().__init__(connection, protocol)
        self.send_limit = realtime.config.limits.send_buffer
        self.realtime = realtime
        self.hub = realtime.hub
        self.guard = SessionGuard(realtime.auth, self._end_session)
        if principal is not None:
            self.guard.admit(principal)
        self.channels: set[str] = set()
        self.outbox: list[bytes] = []  # event frames the hub writes at the end of this tick
        self._auth_timer: asyncio.TimerHandle | None = None
        self._count_in = realtime.metrics.messages_in.inc

    def opened(self) -> None:
        self.hub.add(self)
        self.realtime.metrics.opened(TRANSPORT)
        if self.principal is not None:
            self._send_authenticated(None)
        else:
            timeout = self.realtime.config.auth.timeout
            self._auth_timer = self.loop.call_later(timeout, self._auth_timed_out)

    # Incoming ---------------------------------------------------------------------

    def on_text(self, data: bytes) -> None:
        self._count_in((TRANSPORT,))
        try:
            message = proto.parse(data)
        except proto.ProtocolError as exc:
            self.reply(proto.error(proto.BAD_REQUEST, exc.message, exc.ref))
            return
        kind = message.kind
        if kind == "ping":
            self.reply(proto.encode({"type": "pong"}, message.ref))
        elif kind == "authenticate":
            self._spawn(self._authenticate(message))
        elif self.principal is None:
            self.reply(proto.error(proto.NOT_AUTHENTICATED, "authenticate first", message.ref))
        elif kind == "subscribe":
            self._subscribe(message)
        elif kind == "unsubscribe":
            self._unsubscribe(message)
        else:
            self._publish(message)

    def on_binary(self, data: bytes) -> None:
        self.on_text(data)  # the protocol is JSON either way

    def reply(self, payload: bytes) -> None:
        self.send_text(payload)

    def send_text(self, payload: bytes) -> None:
        if self.outbox:  # behind the events already queued for this connection
            if not self.closing and not self.closed:
                self.outbox.append(text_frame(payload))
        else:
            super().send_text(payload)

    def close_with(self, code: int, reason: str = "", timeout: float = 5.0) -> None:
        if self.outbox and not self.closing and not self.closed:
            self.write_frames(b"".join(self.outbox))  # what was queued goes before the close
        self.outbox.clear()
        super().close_with(code, reason, timeout)

    def _spawn(self, coroutine: Any) -> None:
        task = self.loop.create_task(coroutine)
        self.realtime.tasks.add(task)
        task.add_done_callback(self.realtime.tasks.discard)

    # authenticate -------------------------------------------------------------------

    async def _authenticate(self, message: proto.ClientMessage) -> None:
        assert message.token is not None
        try:
            principal = await self.realtime.auth.verify(message.token)
        except TokenRejected as exc:
            if not self.closed:
                self._end_session(error_code(exc), exc.reason, message.ref)
            return
        if self.closed or self.closing:
            return
        refused = self.guard.admit(principal)
        if refused is not None:
            self.reply(proto.error(proto.INVALID_TOKEN, refused, message.ref))
            return
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        self._send_authenticated(message.ref)
        for channel in no_longer_allowed(self.realtime.rules, principal, list(self.channels)):
            self._drop(channel)

    def _drop(self, channel: str) -> None:
        """A channel the connection's new token may not see: unsubscribed, and said so."""
        self.channels.discard(channel)
        self.hub.leave(channel, self)
        self.reply(
            proto.error(proto.FORBIDDEN, "the new token may not subscribe here", channel=channel)
        )

    def _end_session(self, code: str, reason: str, ref: Any = None) -> None:
        """The session rule's verdict (realtime.session): error frame, then close 4401."""
        self.reply(proto.error(code, reason, ref))
        self.close_with(proto.CLOSE_UNAUTHORIZED, reason[:100])

    @property
    def principal(self) -> Principal | None:
        return self.guard.principal

    def _send_authenticated(self, ref: Any) -> None:
        principal = self.principal
        assert principal is not None
        self.reply(
            proto.encode(
                {
                    "type": "authenticated",
                    "sub": principal.subject,
                    "org": principal.org,
                    "roles": sorted(principal.roles),
                    "expires_at": principal.expires_at,
                },
                ref,
            )
        )

    def _auth_timed_out(self) -> None:
        self._auth_timer = None
        if self.principal is None:
            self.close_with(proto.CLOSE_UNAUTHORIZED, "authentication timeout")

    # subscribe / unsubscribe -----------------------------------------------------------

    def _subscribe(self, message: proto.ClientMessage) -> None:
        channel = message.channel
        assert channel is not None and self.principal is not None
        decision = self.realtime.rules.decide(channel, self.principal, "subscribe")
        if not decision.allowed:
            self.reply(proto.error(proto.FORBIDDEN, decision.reason, message.ref, channel=channel))
            return
        if channel in self.channels:
            self.hub.leave(channel, self)  # a resubscribe (e.g. with `since`) starts over
        elif len(self.channels) >= self.realtime.config.limits.max_subscriptions:
            self.reply(
                proto.error(
                    proto.TOO_MANY_SUBSCRIPTIONS,
                    "subscription limit reached",
                    message.ref,
                    channel=channel,
                )
            )
            return
        self.channels.add(channel)
        self.hub.begin(channel, self)
        self._spawn(self._complete_subscribe(channel, message))

    async def _complete_subscribe(self, channel: str, message: proto.ClientMessage) -> None:
        bus = self.realtime.bus
        page: HistoryPage | None = None
        latest: int | None
        try:
            if message.since is None:
                latest = await bus.latest(channel)
            else:
                page = await bus.history(channel, message.since)
                latest = page.latest
        except Exception as exc:  # the bus is down: subscribe live, without a position
            self.realtime.bus_error("history")
            log.warning("realtime history unavailable", channel=channel, error=str(exc))
            latest = None
        if self.closed or self.closing or channel not in self.channels:
            return
        body: dict[str, Any] = {"type": "subscribed", "channel": channel, "offset": latest}
        if message.since is not None:
            body["recovered"] = page is not None and page.recovered
        self.reply(proto.encode(body, message.ref))
        if page is not None:
            for event in page.events:
                self.send_text(proto.encode(event.client_message()))
        position = position_after(latest, message.since, page)
        for event in self.hub.finish(channel, self, position):
            self.send_text(proto.encode(event.client_message()))

    def _unsubscribe(self, message: proto.ClientMessage) -> None:
        channel = message.channel
        assert channel is not None
        if channel not in self.channels:
            self.reply(
                proto.error(proto.NOT_SUBSCRIBED, "not subscribed", message.ref, channel=channel)
            )
            return
        self.channels.discard(channel)
        self.hub.leave(channel, self)
        self.reply(proto.encode({"type": "unsubscribed", "channel": channel}, message.ref))

    # message (publish) -----------------------------------------------------------------

    def _publish(self, message: proto.ClientMessage) -> None:
        channel = message.channel
        assert channel is not None and self.principal is not None
        decision = self.realtime.rules.decide(channel, self.principal, "publish")
        if not decision.allowed:
            self.reply(proto.error(proto.FORBIDDEN, decision.reason, message.ref, channel=channel))
            return
        try:
            event = make_event(channel, message.event, message.data)
        except BadEvent as exc:
            self.reply(proto.error(proto.BAD_REQUEST, str(exc), message.ref))
            return
        self._spawn(self._send_published(event, message.ref))

    async def _send_published(self, event: Event, ref: Any) -> None:
        try:
            published = await self.realtime.publish(event, TRANSPORT)
        except EventTooLarge as exc:
            self.reply(proto.error(proto.TOO_LARGE, str(exc), ref, max_event_bytes=exc.limit))
            return
        except BusUnavailable:
            self.reply(proto.error(proto.BUS_UNAVAILABLE, "the event bus is unavailable", ref))
            return
        self.reply(
            proto.encode(
                {
                    "type": "published",
                    "channel": event.channel,
                    "id": event.id,
                    "offset": published.offset,
                    "duplicate": published.duplicate,
                },
                ref,
            )
        )

    # Hub callbacks ------------------------------------------------------------------------

    def slow_consumer(self) -> None:
        self.realtime.metrics.slow_consumers.inc((TRANSPORT,))
        self.outbox.clear()
        self.cut_off(
            CLOSE_TRY_AGAIN_LATER,
            "slow consumer",
            timeout=self.realtime.config.limits.close_timeout,
        )

    def heartbeat(self, now: float) -> None:
        limits = self.realtime.config.limits
        if now - self.last_seen > limits.ping_interval + limits.ping_timeout:
            self.abort()  # dead peer: no close handshake to wait for
            return
        self.guard.check()  # expiry (also timed) and revocation: realtime.session
        if self.closing or self.closed:
            return
        self.send_ping()

    def going_away(self) -> None:
        self.close_with(CLOSE_GOING_AWAY, "server shutting down", timeout=1.0)

    # Closing ---------------------------------------------------------------------------------

    def on_closing(self) -> None:
        self.outbox.clear()  # nothing may follow a close frame
        self._leave_all()

    def on_closed(self, code: int) -> None:
        self.guard.stop()
        self._leave_all()
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        self.hub.remove(self)
        self.realtime.metrics.closed(TRANSPORT)

    def _leave_all(self) -> None:
        for channel in self.channels:
            self.hub.leave(channel, self)
        self.channels.clear()


__all__ = ["RealtimeEndpoint", "RealtimeSession", "text_frame"]
