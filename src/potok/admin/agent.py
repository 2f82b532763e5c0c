"""One worker's side of the admin API: what it reports and what it does when asked.

Every read and action goes through `handle(op, args)` with JSON-ready arguments and
answers, whether the caller is this worker's own API or another worker over the
cluster channel (cluster.py): one code path, however many workers there are.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from potok.admin import rate_limits, realtime_view, reloads, services, traffic

if TYPE_CHECKING:
    from collections.abc import Callable

    from potok.observability.metrics import GatewayMetrics
    from potok.process.reload import Reloader
    from potok.runtime import Runtime
    from potok.server.state import ServerState

log = structlog.get_logger("potok.admin")

BREAKER_MODES = ("open", "closed", "auto")


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

    async def handle(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run `op`; ActionError for a refused action, KeyError for an unknown op."""
        if op == "report":
            return self.report()
        if op == "reload":
            return await self.reload(str(args.get("trigger", "admin")))
        if op == "breaker":
            return self.force_breaker(args["service"], args["mode"], args.get("actor", ""))
        if op == "drain":
            return self.drain(args["service"], args["target"], bool(args["drained"]))
        if op == "sync_keys":
            return await self.sync_keys()
        raise KeyError(op)

    # Reads -----------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        runtime = self.runtime()
        route_names = {route.name for route in runtime.routes}
        return {
            "worker": self.describe(runtime),
            "services": services.report(runtime.services),
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

    def force_breaker(self, name: str, mode: str, actor: str) -> dict[str, Any]:
        service = self.runtime().services.get(name)
        if service is None:
            raise ActionError(404, f"no service {name!r}")
        if service.breaker is None:
            raise ActionError(409, f"service {name!r} has no circuit breaker (circuit_breaker)")
        if mode not in BREAKER_MODES:
            raise ActionError(422, f"mode must be one of {', '.join(BREAKER_MODES)}")
        reason = f"forced {mode} by {actor or 'an operator'}" if mode != "auto" else "released"
        service.breaker.force(mode, reason)
        reported: dict[str, Any] = services.report({name: service})[name]
        return reported

    def drain(self, name: str, target: str, drained: bool) -> dict[str, Any]:
        service = self.runtime().services.get(name)
        if service is None:
            raise ActionError(404, f"no service {name!r}")
        try:
            service.drain(target, drained)
        except KeyError:
            raise ActionError(404, f"service {name!r} has no target {target!r}") from None
        except ValueError as exc:
            raise ActionError(409, f"{exc}; hold its breaker open instead") from None
        log.warning("target drained" if drained else "target back", service=name, target=target)
        reported: dict[str, Any] = services.report({name: service})[name]
        return reported

    async def sync_keys(self) -> dict[str, Any]:
        mirror = self.runtime().identity.api_keys
        if mirror is not None:
            await mirror.sync()
        return {"synced": mirror is not None}


def _own_routes() -> set[str]:
    from potok.routing.endpoints import API_ROUTE_NAME  # noqa: PLC0415

    return {API_ROUTE_NAME}
