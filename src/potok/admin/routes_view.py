"""The compiled route table: every route in match order, with what it runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from potok.routing.endpoints import route_name

if TYPE_CHECKING:
    from potok.runtime import Runtime


def report(runtime: Runtime) -> list[dict[str, Any]]:
    out = []
    for index, (config, route) in enumerate(
        zip(runtime.config.routes, runtime.routes, strict=True)
    ):
        match = config.match
        out.append(
            {
                "index": index,
                "name": route_name(index, config),
                "match": {
                    "path": match.path,
                    "prefix": match.prefix,
                    "methods": list(match.methods),
                    "host": match.host,
                },
                "service": config.service,
                "policies": list(route.pipeline.names),
                "timeout_s": route.request_timeout,
                "rewrites": route.rewrite is not None,
            }
        )
    return out
