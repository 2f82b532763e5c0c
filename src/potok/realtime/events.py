"""Events: what travels on the bus, how it is checked, and its one client-facing encoding.

On the bus an event is a JSON object `{"id", "channel", "type", "data", "ts"}`
(`offset` is added by the bus that stores it). Publishers outside the gateway
write the same object; anything else is dropped and counted as a bus error.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Any

import orjson

CHANNEL = re.compile(r"^[A-Za-z0-9_:@=+-]+(\.[A-Za-z0-9_:@=+-]+)*$")
EVENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
EVENT_TYPE = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")
MAX_CHANNEL = 200
# Channels of the gateway's own commands on the bus (cache purges): no publisher may use
# them, and the hub never delivers them to clients.
RESERVED_PREFIX = "_potok."


class BadEvent(ValueError):
    """An event that breaks the format; the message says what is wrong."""


def valid_channel(name: object) -> bool:
    return isinstance(name, str) and len(name) <= MAX_CHANNEL and CHANNEL.match(name) is not None


def new_event_id() -> str:
    return os.urandom(12).hex()


@dataclass(slots=True)
class Event:
    """One event. `offset` grows with each event of its channel (None: not stored)."""

    id: str
    channel: str
    type: str
    data: Any
    ts: float
    offset: int | None = None

    def bus_payload(self) -> bytes:
        """The JSON published on the bus (without offset: the bus assigns it)."""
        return orjson.dumps(
            {"id": self.id, "channel": self.channel, "type": self.type, "data": self.data,
             "ts": self.ts}
        )  # fmt: skip

    def client_message(self) -> dict[str, Any]:
        """The `event` message of the WebSocket protocol."""
        return {
            "type": "event",
            "channel": self.channel,
            "id": self.id,
            "event": self.type,
            "data": self.data,
            "offset": self.offset,
        }


def make_event(
    channel: object,
    event_type: object,
    data: Any,
    event_id: object = None,
    *,
    reserved: bool = False,
) -> Event:
    """A new event from a publisher's fields, checked; BadEvent says which field is wrong.
    Only the gateway itself (`reserved`) publishes on `RESERVED_PREFIX` channels."""
    if not valid_channel(channel):
        raise BadEvent("channel: letters, digits and _ : @ = + - in '.'-separated parts")
    if not reserved and str(channel).startswith(RESERVED_PREFIX):
        raise BadEvent(f"channel: names starting with {RESERVED_PREFIX!r} are the gateway's own")
    if not isinstance(event_type, str) or not EVENT_TYPE.match(event_type):
        raise BadEvent("type: 1-64 of letters, digits and _ . : / -")
    if event_id is None:
        event_id = new_event_id()
    elif not isinstance(event_id, str) or not EVENT_ID.match(event_id):
        raise BadEvent("id: 1-128 of letters, digits and _ . : -")
    return Event(event_id, channel, event_type, data, time.time())  # type: ignore[arg-type]


def decode_event(
    raw: bytes,
    channel: str | None = None,
    offset: int | None = None,
    fallback_id: str | None = None,
) -> Event:
    """An event read from the bus. `channel` (from the subject) wins over the body's;
    `fallback_id` (e.g. a message-id header) serves when the body has no id."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadEvent("not JSON") from None
    if not isinstance(body, dict):
        raise BadEvent("not a JSON object")
    name = channel if channel is not None else body.get("channel")
    if not valid_channel(name):
        raise BadEvent("bad or missing channel")
    event_type = body.get("type", "message")
    if not isinstance(event_type, str) or not EVENT_TYPE.match(event_type):
        raise BadEvent("bad type")
    event_id = body.get("id", fallback_id)
    if event_id is None:
        # No id: nothing to de-duplicate by but the stored offset.
        event_id = f"{name}@{offset}" if offset is not None else new_event_id()
    elif not isinstance(event_id, str) or not EVENT_ID.match(event_id):
        raise BadEvent("bad id")
    ts = body.get("ts")
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        ts = time.time()
    if offset is None:
        stored = body.get("offset")
        if isinstance(stored, int) and not isinstance(stored, bool):
            offset = stored
    return Event(event_id, name, event_type, body.get("data"), float(ts), offset)  # type: ignore[arg-type]
