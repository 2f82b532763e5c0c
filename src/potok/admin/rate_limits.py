"""Rate-limit policies and the keys they refuse most (policies/rate_limit/refused.py),
per worker and merged: counts of the same limit and key add up across workers."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from potok.policies.rate_limit.refused import GENERATION, RESOURCE_KEY, RefusedRegistry

if TYPE_CHECKING:
    from potok.resources import Resources

TOP = 10


def report(resources: Resources, routes: set[str]) -> list[dict[str, Any]]:
    """This worker's limits that serve a route of the running config."""
    registry: RefusedRegistry = resources.get(RESOURCE_KEY, RefusedRegistry)
    out = []
    for name, sketch in sorted(registry.sketches.items()):
        serving = sorted(sketch.routes & routes)
        if not serving:
            continue  # a limit a reload removed
        out.append(
            {
                "name": name,
                **asdict(sketch.info),
                "routes": serving,
                "refused_total": sketch.total,
                "top_keys": [
                    {"key": key, "refused": count, "overcount": error}
                    for key, count, error in sketch.top(TOP)
                ],
            }
        )
    return out


def merge(per_worker: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    keys: dict[str, dict[str, list[int]]] = {}
    for limits in per_worker.values():
        for limit in limits:
            into = merged.setdefault(limit["name"], {**limit, "refused_total": 0, "top_keys": []})
            into["routes"] = sorted(set(into["routes"]) | set(limit["routes"]))
            into["refused_total"] += limit["refused_total"]
            counts = keys.setdefault(limit["name"], {})
            for entry in limit["top_keys"]:
                pair = counts.setdefault(entry["key"], [0, 0])
                pair[0] += entry["refused"]
                pair[1] += entry["overcount"]
    for name, limit in merged.items():
        ranked = sorted(keys[name].items(), key=lambda item: (-item[1][0], item[0]))[:TOP]
        limit["top_keys"] = [
            {"key": key, "refused": pair[0], "overcount": pair[1]} for key, pair in ranked
        ]
        limit["window_s"] = GENERATION * 2
    return [merged[name] for name in sorted(merged)]
