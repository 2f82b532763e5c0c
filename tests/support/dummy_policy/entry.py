"""The `dummy` policy's registry entry: what would be its one line in `BUILT_IN`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from potok.policies.base import Stage
from potok.policies.entry import PolicyEntry, PolicyPlace, Problem
from tests.support.dummy_policy.config import DummyConfig
from tests.support.dummy_policy.policy import build

if TYPE_CHECKING:
    from potok.config.models import GatewayConfig


def consumed(config: DummyConfig) -> tuple[str, ...]:
    return (config.token_header,) if config.token_header is not None else ()


def problems(config: DummyConfig, place: PolicyPlace, gateway: GatewayConfig) -> list[Problem]:
    """It stamps the route's name, so every route it applies to must have one."""
    return [
        (f"{route_path}.name", "the dummy policy stamps the route's name: give it one")
        for route_path, route in place.routes
        if route.name is None
    ]


ENTRY = PolicyEntry(
    name="dummy",
    config=DummyConfig,
    build=build,
    stage=Stage.AUTHORIZE,
    rank=20,  # after authorize (10)
    description="Stamp answers with the route's name.",
    consumes=consumed,
    check=problems,
)
