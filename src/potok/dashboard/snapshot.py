"""One dashboard update: the admin API's view of every worker (services, targets,
breakers, rate limits, realtime, reloads), per-route rates from the metrics, and the
latest audit events."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from potok.admin import identity as admin_identity
from potok.admin import rate_limits, realtime_view, reloads, services
from potok.dashboard import rates

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from potok.admin.router import AdminHandle

RELOADS = 5
AUDIT_EVENTS = 10


class Snapshots:
    """One per open dashboard: remembers the last metrics sample for the next rates."""

    def __init__(self, admin: AdminHandle, registry: CollectorRegistry) -> None:
        self.admin = admin
        self.registry = registry
        self.previous: rates.Sample | None = None

    async def next(self) -> dict[str, Any]:
        replies = await self.admin.cluster.ask("report")
        per_worker = {w: r["result"] for w, r in replies.items() if r["ok"]}
        # On the event loop, as /api/v1/metrics reads it: the metrics' dicts belong to this
        # thread (a read from another could see one change size mid-iteration); the other
        # workers' snapshot files it reads are a few KiB on local disk.
        sampled = rates.sample(self.registry, time.monotonic())
        routes = rates.rates(self.previous, sampled)
        self.previous = sampled
        runtime = self.admin.runtime()
        limits = rate_limits.merge({w: r["rate_limits"] for w, r in per_worker.items()})
        return {
            "at": time.time(),
            "digest": runtime.digest,
            "expected_workers": runtime.config.server.workers,
            "workers": [
                r["result"]["worker"] if r["ok"] else {"id": w, "unreachable": r["detail"]}
                for w, r in sorted(replies.items())
            ],
            "services": services.merge({w: r["services"] for w, r in per_worker.items()}),
            "routes": [route.document() for route in routes],
            "rate_limits": limits,
            "realtime": {
                **realtime_view.merge({w: r["realtime"] for w, r in per_worker.items()}),
                "websocket_connections": int(sampled.websockets),
            },
            "reloads": reloads.merge({w: r["reloads"] for w, r in per_worker.items()}, RELOADS),
            "audit": await self._audit(),
        }

    async def _audit(self) -> list[dict[str, Any]] | None:
        """The latest audit events; None when the gateway keeps no audit log (no database)."""
        try:
            events = await admin_identity.query_audit(
                self.admin.runtime().identity,
                since=None,
                until=None,
                actor=None,
                action=None,
                limit=AUDIT_EVENTS,
            )
        except admin_identity.NoDatabase:
            return None
        return [admin_identity.event_row(event) for event in events]
