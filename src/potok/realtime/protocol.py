"""The JSON protocol of /api/v1/ws (docs/realtime.md is the reference for clients).

Client -> server: `authenticate {token}`, `subscribe {channel, since?}`,
`unsubscribe {channel}`, `message {channel, data, event?}`, `ping`. Any of them
may carry `ref`, echoed in the reply so a client can match answers.

Server -> client: `authenticated`, `subscribed`, `unsubscribed`, `published`,
`event {channel, id, event, data, offset}`, `error {code, message}`, `pong`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

# Close codes of the protocol (4000-4999 is the application range).
CLOSE_UNAUTHORIZED = 4401

# Error codes in `error` frames.
BAD_REQUEST = "bad_request"
NOT_AUTHENTICATED = "not_authenticated"
INVALID_TOKEN = "invalid_token"
TOKEN_EXPIRED = "token_expired"
FORBIDDEN = "forbidden"
TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
NOT_SUBSCRIBED = "not_subscribed"
BUS_UNAVAILABLE = "bus_unavailable"
TOO_LARGE = "too_large"  # an event bigger than the bus carries
GOING_AWAY = "going_away"  # Socket.IO's notice before a shutdown disconnect (plain: close 1001)

KINDS = frozenset({"authenticate", "subscribe", "unsubscribe", "message", "ping"})


class ProtocolError(Exception):
    """A client message that cannot be understood; answered with an `error` frame."""

    def __init__(self, message: str, ref: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.ref = ref


@dataclass(frozen=True, slots=True)
class ClientMessage:
    kind: str
    ref: Any
    token: str | None = None
    channel: str | None = None
    since: int | None = None
    data: Any = None
    event: str = "message"


def _ref(body: dict[str, Any]) -> Any:
    ref = body.get("ref")
    if ref is None or (isinstance(ref, str | int) and not isinstance(ref, bool)):
        if isinstance(ref, str) and len(ref) > 64:
            return None
        return ref
    return None


def parse(raw: bytes) -> ClientMessage:
    """Decode one client frame; ProtocolError says what is wrong with it."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProtocolError("not JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError("a message is a JSON object")
    ref = _ref(body)
    kind = body.get("type")
    if kind not in KINDS:
        raise ProtocolError(f"unknown type; expected one of {sorted(KINDS)}", ref)
    if kind == "ping":
        return ClientMessage("ping", ref)
    if kind == "authenticate":
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise ProtocolError("authenticate needs a 'token' string", ref)
        return ClientMessage("authenticate", ref, token=token)
    channel = body.get("channel")
    if not isinstance(channel, str) or not channel:
        raise ProtocolError(f"{kind} needs a 'channel' string", ref)
    if kind == "subscribe":
        since = body.get("since")
        if since is not None and (
            not isinstance(since, int) or isinstance(since, bool) or since < 0
        ):
            raise ProtocolError("'since' is an offset: an integer >= 0", ref)
        return ClientMessage("subscribe", ref, channel=channel, since=since)
    if kind == "unsubscribe":
        return ClientMessage("unsubscribe", ref, channel=channel)
    event = body.get("event", "message")
    if not isinstance(event, str):
        raise ProtocolError("'event' is a string", ref)
    return ClientMessage("message", ref, channel=channel, data=body.get("data"), event=event)


def encode(message: dict[str, Any], ref: Any = None) -> bytes:
    if ref is not None:
        message["ref"] = ref
    return orjson.dumps(message)


def error(code: str, text: str, ref: Any = None, **extra: Any) -> bytes:
    return encode({"type": "error", "code": code, "message": text, **extra}, ref)


PONG = orjson.dumps({"type": "pong"})
