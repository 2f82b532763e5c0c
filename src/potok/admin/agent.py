"""One worker's side of the admin API: what it reports and what it does when asked.

Every read and action goes through `handle(op, args)` with JSON-ready arguments and
answers, whether the caller is this worker's own API or another worker over the
cluster channel (cluster.py): one code path, however many workers there are.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from potok.admin import rate_limits, realtime_view, reloads, services, traffic
from potok.admin.overrides import Change, OverrideStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from potok.observability.metrics import GatewayMetrics
    from potok.process.reload import Reloader
    from potok.runtime import Runtime
    from potok.server.state import ServerState
    from potok.upstream.service import Service

log = structlog.get_logger("potok.admin")


class ActionError(Exception):
    """An action this worker refuses: HTTP status and why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class WorkerAgent:
    worker_id: str
    runtime: Callable[[], Runtime]
    metrics: GatewayMetrics
    supervised: bool = False
    state: ServerState | None = None
    reloader: Reloader | None = None  # set once the worker serves (None: no config file)
    started_at: float = field(default_factory=time.time)
    # Breakers held and targets drained: the instance's, kept across restarts and reloads.
    overrides: OverrideStore = field(default_factory=lambda: OverrideStore(None))
    # Names this instance on the bus (every worker of it alike): its own cluster-wide
    # actions come back to it there and are not applied twice.
    instance: str = ""
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run `op`; ActionError for a refused action, KeyError for an unknown op."""
        if op == "report":
            return self.report()
        if op == "reload":
            return await self.reload(str(args.get("trigger", "admin")))
        if op == "override":
            return await self.override(_change(args["change"]))
        if op == "sync_keys":
            return await self.sync_keys()
        raise KeyError(op)

    # Reads -----------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        runtime = self.runtime()
        route_names = {route.name for route in runtime.routes}
        return {
            "worker": self.describe(runtime),
            "services": services.report(runtime.services, self.overrides),
            "rate_limits": rate_limits.report(runtime.resources, route_names | _own_routes()),
            "realtime": realtime_view.report(runtime.realtime),
            "reloads": reloads.report(self.reloader),
            "traffic": traffic.report(self.metrics),
        }

    def describe(self, runtime: Runtime) -> dict[str, Any]:
        return {
            "id": self.worker_id,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "uptime_s": round(time.time() - self.started_at, 3),
            "config_digest": runtime.digest,
            "config_loaded_at": runtime.loaded_at,
            "connections": len(self.state.connections) if self.state is not None else 0,
            "in_flight": self.metrics.inflight_count,
            "draining": bool(self.state.draining) if self.state is not None else False,
        }

    # Actions ---------------------------------------------------------------------

    async def reload(self, trigger: str) -> dict[str, Any]:
        if self.reloader is None:
            raise ActionError(409, "this gateway was not started from a config file")
        outcome = await self.reloader.reload(trigger)
        return reloads.outcome(outcome, self.runtime().digest)

    def check(self, change: Change) -> Service:
        """The service `change` acts on; ActionError if this worker would refuse it."""
        service = self.runtime().services.get(change.service)
        if service is None:
            raise ActionError(404, f"no service {change.service!r}")
        if change.kind == "breaker":
            if service.breaker is None:
                raise ActionError(
                    409, f"service {change.service!r} has no circuit breaker (circuit_breaker)"
                )
            return service
        target = next((t for t in service.targets if t.name == change.target), None)
        if target is None:
            raise ActionError(404, f"service {change.service!r} has no target {change.target!r}")
        if change.active and not target.drained and len(service.serving) <= 1:
            raise ActionError(
                409, f"{change.target} is the last target serving {change.service}; "
                "hold its breaker open instead"
            )  # fmt: skip
        return service

    async def override(self, change: Change) -> dict[str, Any]:
        """Apply an operator's change here and keep it for the instance (the file)."""
        service = self.check(change)
        if self.overrides.remember(change):
            _enforce(service, change)
            await self.overrides.persist(change)
            log.warning(
                "operator override",
                kind=change.kind,
                service=change.service,
                target=change.target or None,
                state=change.state,
                actor=change.actor,
                scope=change.scope,
            )
        else:
            log.info("operator override superseded by a newer one", **change.to_json())
        reported: dict[str, Any] = services.report({change.service: service}, self.overrides)[
            change.service
        ]
        return reported

    async def restore(self) -> None:
        """At start: the instance's overrides, from the file, applied here."""
        await self.overrides.load()
        await self.overrides.drop(self.reapply())

    def reapply_soon(self) -> None:
        """After a reload installed a new Runtime: overrides applied before any request
        reaches a rebuilt service; the file's stale entries dropped in the background."""
        stale = self.reapply()
        if stale:
            task = asyncio.get_running_loop().create_task(self.overrides.drop(stale))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def reapply(self) -> list[Change]:
        """Overrides in force onto the running services (after a start or a reload: a
        rebuilt service starts closed and with every target in rotation); those whose
        service or target is gone are forgotten, said so, and returned."""
        stale: list[Change] = []
        for change in self.overrides.active():
            try:
                service = self.check(change)
            except ActionError as refusal:
                log.warning("operator override dropped", reason=refusal.detail, **change.to_json())
                stale.append(change)
                continue
            _enforce(service, change)
        for change in stale:
            self.overrides.forget(change)
        return stale

    async def sync_keys(self) -> dict[str, Any]:
        mirror = self.runtime().identity.api_keys
        if mirror is not None:
            await mirror.sync()
        return {"synced": mirror is not None}


def _enforce(service: Service, change: Change) -> None:
    """Make `service` hold `change` (nothing to do when it already does)."""
    if change.kind == "breaker":
        breaker = service.breaker
        if breaker is not None and breaker.forced != (change.state if change.active else None):
            mode = change.state
            reason = (
                f"forced {mode} by {change.actor or 'an operator'}"
                if change.active
                else (f"released by {change.actor or 'an operator'}")
            )
            breaker.force(mode, reason)
        return
    drained = change.active
    target = next((t for t in service.targets if t.name == change.target), None)
    if target is not None and target.drained != drained:
        service.drain(change.target, drained)


def _change(data: Any) -> Change:
    try:
        return Change.from_json(data)
    except ValueError as exc:
        raise ActionError(400, str(exc)) from None


def _own_routes() -> set[str]:
    from potok.routing.endpoints import API_ROUTE_NAME  # noqa: PLC0415

    return {API_ROUTE_NAME}
