"""Services, targets and breakers: what one worker sees, and the workers' views merged.

Breakers, target health, ejections and in-flight counts are each worker's own (the
data plane keeps no shared state for them): the merged view sums what adds up
(in-flight, idle connections, ejections) and lists per worker what does not (a
breaker's state, a target's health).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from potok.upstream.circuit_breaker import STATE_NAMES

if TYPE_CHECKING:
    from potok.admin.overrides import Change, OverrideStore
    from potok.upstream.service import Service


def report(services: dict[str, Service], overrides: OverrideStore | None = None) -> dict[str, Any]:
    """This worker's services (JSON-ready); with `overrides`, who holds a breaker or
    drained a target, since when, and how far the action reached."""
    return {name: _service(service, overrides) for name, service in services.items()}


def _service(service: Service, overrides: OverrideStore | None) -> dict[str, Any]:
    breaker = service.breaker
    held = overrides.breaker(service.name) if overrides is not None else None
    return {
        "balancer": service.config.balancer,
        "breaker": (
            {
                "state": STATE_NAMES[breaker.reported_state()],
                "reason": breaker.reason,
                "forced": breaker.forced,
                **_by(held if breaker.forced else None, "forced"),
                "open_for_s": round(breaker.opened_for(), 3),
                "half_open_in_s": round(breaker.retry_after(), 3),
            }
            if breaker is not None
            else None
        ),
        "bulkhead": (
            {"in_use": service.bulkhead.in_use, "queued": service.bulkhead.queued}
            if service.bulkhead is not None
            else None
        ),
        "targets": [_target(service, target.describe(), overrides) for target in service.targets],
    }


def _target(
    service: Service, described: dict[str, Any], overrides: OverrideStore | None
) -> dict[str, Any]:
    name = str(described["target"])
    held = overrides.drained(service.name, name) if overrides is not None else None
    return {**described, **_by(held if described["drained"] else None, "drained")}


def _by(change: Change | None, verb: str) -> dict[str, Any]:
    """`forced_by`, `forced_at` (UNIX time), `forced_scope` (or drained_*): null when no
    operator holds it."""
    return {
        f"{verb}_by": change.actor if change is not None else None,
        f"{verb}_at": change.at if change is not None else None,
        f"{verb}_scope": change.scope if change is not None else None,
    }


def merge(per_worker: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{worker id: report()} -> one document per service, with each worker's breaker."""
    merged: dict[str, Any] = {}
    for worker, services in sorted(per_worker.items()):
        for name, service in services.items():
            into = merged.setdefault(
                name,
                {"balancer": service["balancer"], "breakers": {}, "targets": {}, "bulkhead": None},
            )
            if service["breaker"] is not None:
                into["breakers"][worker] = service["breaker"]
            if service["bulkhead"] is not None:
                bulkhead = into["bulkhead"] or {"in_use": 0, "queued": 0}
                bulkhead["in_use"] += service["bulkhead"]["in_use"]
                bulkhead["queued"] += service["bulkhead"]["queued"]
                into["bulkhead"] = bulkhead
            for target in service["targets"]:
                _merge_target(into["targets"], worker, target)
    for service in merged.values():
        service["targets"] = list(service["targets"].values())
        service["breaker"] = _breaker_summary(service["breakers"])
    return merged


def _merge_target(targets: dict[str, Any], worker: str, target: dict[str, Any]) -> None:
    into = targets.setdefault(
        target["target"],
        {
            "target": target["target"],
            "healthy": True,
            "drained": False,
            "ejections": 0,
            "in_flight": 0,
            "idle_connections": 0,
            "unhealthy_in": [],
            "drained_by": None,
            "drained_at": None,
            "drained_scope": None,
        },
    )
    into["ejections"] += target["ejections"]
    into["in_flight"] += target["in_flight"]
    into["idle_connections"] += target["idle_connections"]
    into["drained"] = into["drained"] or target["drained"]
    if target.get("drained_at") is not None and (into["drained_at"] or 0) < target["drained_at"]:
        for field in ("drained_by", "drained_at", "drained_scope"):
            into[field] = target[field]
    if not target["healthy"]:
        into["healthy"] = False
        into["unhealthy_in"].append(worker)


def _breaker_summary(breakers: dict[str, dict[str, Any]]) -> str | None:
    """ "closed", "open", "half_open" when every worker agrees; "mixed" otherwise."""
    states = {b["state"] for b in breakers.values()}
    if not states:
        return None
    return states.pop() if len(states) == 1 else "mixed"
