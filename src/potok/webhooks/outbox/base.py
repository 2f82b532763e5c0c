"""What an outbox stores and the operations every backend offers."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"
STATES = (PENDING, DELIVERED, DEAD)

TABLE = "potok_webhook_deliveries"

# Columns in the order every SELECT returns them (`Delivery.from_row`).
COLUMNS = (
    "id, source, replay_key, event_type, received_at, headers, body, state, attempts, "
    "next_at, last_error, delivered_at, seq"
)


def new_delivery_id() -> str:
    """128 random bits: the id the service sees as Idempotency-Key and webhook-id."""
    return "wh_" + os.urandom(16).hex()


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """An accepted delivery about to be written. `replay_key` (the provider's delivery
    id) and `signature_key` (the digest of what was signed) are each unique per source:
    a delivery matching a stored row on either is a replay. No signature key (None):
    only the replay key is checked."""

    id: str
    source: str
    replay_key: str
    event_type: str
    received_at: float
    headers: tuple[tuple[str, str], ...]
    body: bytes
    signature_key: str | None = None

    def headers_json(self) -> str:
        return orjson.dumps(self.headers).decode()


@dataclass(frozen=True, slots=True)
class Delivery:
    """A stored delivery as a forwarder or an operator sees it."""

    id: str
    source: str
    replay_key: str
    event_type: str
    received_at: float
    headers: tuple[tuple[str, str], ...]
    body: bytes
    state: str
    attempts: int
    next_at: float
    last_error: str | None
    delivered_at: float | None
    seq: int

    @classmethod
    def from_row(cls, row: Any) -> Delivery:
        headers = tuple(tuple(pair) for pair in orjson.loads(row[5]))
        return cls(
            id=row[0],
            source=row[1],
            replay_key=row[2],
            event_type=row[3],
            received_at=float(row[4]),
            headers=headers,
            body=bytes(row[6]),
            state=row[7],
            attempts=int(row[8]),
            next_at=float(row[9]),
            last_error=row[10],
            delivered_at=float(row[11]) if row[11] is not None else None,
            seq=int(row[12]),
        )

    def summary(self) -> dict[str, Any]:
        """What `potok webhooks list` and the admin API show (no body)."""
        return {
            "id": self.id,
            "source": self.source,
            "event_type": self.event_type,
            "state": self.state,
            "attempts": self.attempts,
            "received_at": self.received_at,
            "next_at": self.next_at if self.state == PENDING else None,
            "delivered_at": self.delivered_at,
            "last_error": self.last_error,
            "bytes": len(self.body),
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one attempt: delivered, retry at `next_at`, or dead."""

    id: str
    state: str
    error: str | None = None
    next_at: float = 0.0
    attempted: bool = True  # False: not sent at all (breaker open): attempts stay as they were


@dataclass(frozen=True, slots=True)
class Depth:
    """Pending deliveries of one source and the age of its oldest."""

    source: str
    pending: int
    oldest: float | None  # received_at of the oldest pending


class Outbox(Protocol):
    """Every call is safe from the event loop (no blocking I/O on it)."""

    name: str

    async def start(self) -> None:
        """Connect and create the table if needed."""
        ...

    async def close(self) -> None: ...

    def accept(self, delivery: NewDelivery) -> asyncio.Future[bool]:
        """Store durably; the future says True once committed and synced, False when the
        replay key or the signature key is already stored for its source (a replay:
        nothing written). No task is created: many accepts share one commit (group
        commit)."""
        ...

    async def claim(
        self, owner: str, now: float, limit: int, lease: float, ordered: tuple[str, ...]
    ) -> list[Delivery]:
        """Due pending deliveries nobody else holds, leased to `owner` until now + lease.
        For the `ordered` sources only the oldest pending one of each is eligible."""
        ...

    async def settle(self, owner: str, outcomes: list[Outcome], now: float) -> None:
        """Record attempts' outcomes (attempts + 1) and release their leases."""
        ...

    async def recent(self, state: str | None, source: str | None, limit: int) -> list[Delivery]:
        """Newest first."""
        ...

    async def get(self, delivery_id: str) -> Delivery | None: ...

    async def replay(self, delivery_id: str, now: float) -> bool:
        """Back to pending, due now, attempts 0 (any state); False if unknown."""
        ...

    async def purge(self, state: str, before: float) -> int:
        """Delete deliveries in `state` received before `before`; the number deleted."""
        ...

    async def depth(self) -> list[Depth]: ...
