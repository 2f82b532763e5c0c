"""The `cors` policy's registry entry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from potok.policies.base import Stage
from potok.policies.cors.config import CorsConfig
from potok.policies.cors.policy import build
from potok.policies.entry import PolicyEntry, PolicyPlace, Problem

if TYPE_CHECKING:
    from potok.config.models import GatewayConfig


def problems(config: CorsConfig, place: PolicyPlace, gateway: GatewayConfig) -> list[Problem]:
    """Browsers' preflights are OPTIONS: a route limited to other methods answers them 405."""
    return [
        (
            f"{route_path}.match.methods",
            "add OPTIONS: the route has a cors policy, and browsers' preflight "
            "requests (OPTIONS) must reach it",
        )
        for route_path, route in place.routes
        if route.match.methods and "OPTIONS" not in route.match.methods
    ]


ENTRY = PolicyEntry(
    name="cors",
    config=CorsConfig,
    build=build,
    stage=Stage.EDGE,
    rank=20,
    description="Cross-origin requests from browsers.",
    own_api=True,
    api_description="Cross-origin requests from browsers (a front end calling login).",
    probes=True,  # adds headers; a preflight is answered, never refused for being one
    check=problems,
)
