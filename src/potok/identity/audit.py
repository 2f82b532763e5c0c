"""The audit log: security events recorded off the request path, written in batches.

`AuditLog.record` appends to a bounded buffer and returns (no I/O, never
blocks); a background task writes whatever has gathered every `flush_interval`
(or sooner once a batch is full) in one transaction. When the buffer is full
the event is counted in `dropped`, so a flood of 401s costs memory we chose in
advance and one write per batch, not a write per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from sqlalchemy import insert, select

from potok.identity.schema import audit_events

if TYPE_CHECKING:
    from potok.identity.config import AuditConfig
    from potok.identity.database import Database

log = structlog.get_logger("potok.audit")

# Event names (the `event` column).
LOGIN_SUCCEEDED = "login.succeeded"
LOGIN_FAILED = "login.failed"
LOGIN_LOCKED = "login.locked"
REFRESH_ROTATED = "token.refreshed"
REFRESH_REUSED = "token.refresh_reused"
REFRESH_DENIED = "token.refresh_denied"  # expired, revoked or disabled user: no sign of theft
LOGOUT = "token.logout"
KEY_CREATED = "key.created"
KEY_REVOKED = "key.revoked"
KEY_ROTATED = "key.rotated"
USER_CREATED = "user.created"
USER_CHANGED = "user.changed"
REQUEST_DENIED = "request.denied"
WEBHOOK_REJECTED = "webhook.rejected"  # a delivery refused at ingress (webhooks/endpoint.py)

# Names earlier docs used, still accepted by `potok audit --event`.
EVENT_ALIASES = {"token.refresh_reuse": REFRESH_REUSED}


@dataclass(frozen=True, slots=True)
class AuditEvent:
    at: float
    event: str
    outcome: str
    actor: str | None = None
    ip: str | None = None
    route: str | None = None
    request_id: str | None = None
    detail: dict[str, Any] | None = None

    def row(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "event": self.event,
            "outcome": self.outcome,
            "actor": self.actor,
            "ip": self.ip,
            "route": self.route,
            "request_id": self.request_id,
            "detail": orjson.dumps(self.detail).decode() if self.detail else None,
        }


class AuditStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def write(self, events: list[AuditEvent]) -> None:
        if events:
            async with self._db.engine.begin() as conn:
                await conn.execute(insert(audit_events), [e.row() for e in events])

    async def query(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        event: str | None = None,
        actor: str | tuple[str, ...] | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        """Newest first. `actor` may be several names for one actor (a username and its id)."""
        query = select(audit_events).order_by(audit_events.c.id.desc()).limit(limit)
        if since is not None:
            query = query.where(audit_events.c.at >= since)
        if until is not None:
            query = query.where(audit_events.c.at < until)
        if event is not None:
            event = EVENT_ALIASES.get(event, event)
            query = query.where(audit_events.c.event.like(event.replace("*", "%")))
        if isinstance(actor, str):
            query = query.where(audit_events.c.actor == actor)
        elif actor:
            query = query.where(audit_events.c.actor.in_(actor))
        async with self._db.engine.connect() as conn:
            rows = await conn.execute(query)
            out = []
            for row in rows:
                m = row._mapping
                out.append(
                    AuditEvent(
                        m["at"],
                        m["event"],
                        m["outcome"],
                        m["actor"],
                        m["ip"],
                        m["route"],
                        m["request_id"],
                        orjson.loads(m["detail"]) if m["detail"] else None,
                    )
                )
            return out


class AuditLog:
    """The buffer in front of the store, and the task that drains it."""

    def __init__(self, config: AuditConfig, store: AuditStore | None) -> None:
        self.config = config
        self.store = store
        self._buffer: deque[AuditEvent] = deque()
        self._limit = config.queue_size
        self.dropped = 0
        self.written = 0
        self.failed = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def record(
        self,
        event: str,
        outcome: str,
        *,
        actor: str | None = None,
        ip: str | None = None,
        route: str | None = None,
        request_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Queue an event; never blocks, never raises. Overflow is counted in `dropped`."""
        if not self.config.enabled:
            return
        if len(self._buffer) >= self._limit:
            self.dropped += 1
            return
        self._buffer.append(
            AuditEvent(time.time(), event, outcome, actor, ip, route, request_id, detail)
        )
        if self._wake is not None and len(self._buffer) >= self.config.batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._drain_forever())

    async def _drain_forever(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.flush_interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write everything buffered now, batch by batch."""
        while self._buffer:
            batch = [
                self._buffer.popleft()
                for _ in range(min(self.config.batch_size, len(self._buffer)))
            ]
            if self.config.log:
                for item in batch:
                    log.info(
                        "audit",
                        audit_event=item.event,
                        outcome=item.outcome,
                        actor=item.actor,
                        ip=item.ip,
                        route=item.route,
                        request_id=item.request_id,
                        detail=item.detail,
                    )
            if self.store is None:
                continue
            try:
                await self.store.write(batch)
                self.written += len(batch)
            except Exception as exc:
                self.failed += len(batch)
                log.warning("writing audit events failed", error=str(exc), events=len(batch))
                return

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        if self.dropped:
            log.warning("audit events dropped (queue full)", dropped=self.dropped)
