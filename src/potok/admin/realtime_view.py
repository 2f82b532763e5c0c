"""WebSocket connections and channel subscriptions: each worker's hub, then summed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from potok.realtime.service import Realtime

TOP_CHANNELS = 50


def report(realtime: Realtime | None) -> dict[str, Any] | None:
    if realtime is None:
        return None
    hub = realtime.hub
    channels = {name: hub.subscribers(name) for name in hub.channels}
    return {"connections": len(hub.members), "channels": channels}


def merge(per_worker: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    reports = {worker: r for worker, r in per_worker.items() if r is not None}
    if not reports:
        return {"enabled": False, "connections": 0, "channels": [], "channel_count": 0}
    channels: dict[str, int] = {}
    for report in reports.values():
        for name, count in report["channels"].items():
            channels[name] = channels.get(name, 0) + count
    ranked = sorted(channels.items(), key=lambda item: (-item[1], item[0]))
    return {
        "enabled": True,
        "connections": sum(r["connections"] for r in reports.values()),
        "connections_by_worker": {w: r["connections"] for w, r in sorted(reports.items())},
        "channel_count": len(channels),
        # The busiest channels (a hub may hold many thousands).
        "channels": [{"channel": n, "subscribers": c} for n, c in ranked[:TOP_CHANNELS]],
    }
