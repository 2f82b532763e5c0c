"""The `authorize` policy's registry entry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from potok.policies.authorize.config import AuthorizeConfig
from potok.policies.authorize.policy import build
from potok.policies.base import Stage
from potok.policies.entry import PolicyEntry, PolicyPlace, Problem

if TYPE_CHECKING:
    from potok.config.models import GatewayConfig


def problems(config: AuthorizeConfig, place: PolicyPlace, gateway: GatewayConfig) -> list[Problem]:
    """A tenant rule reads a path parameter: a route without it would refuse everyone."""
    if config.tenant is None:
        return []
    param = config.tenant.param
    field = f"{place.path}.tenant.param"
    found: list[Problem] = []
    for route_path, route in place.routes:
        if "{" + param + "}" not in (route.match.path or route.match.prefix or ""):
            whose = "the route" if place.path.startswith(route_path + ".") else route_path
            found.append((field, f"{whose} has no path parameter {{{param}}}"))
    return found


# Not on the own API: its endpoints authenticate (and authorise) their callers themselves.
ENTRY = PolicyEntry(
    name="authorize",
    config=AuthorizeConfig,
    build=build,
    stage=Stage.AUTHORIZE,
    rank=10,
    description="Roles, scopes and tenant isolation.",
    check=problems,
)
