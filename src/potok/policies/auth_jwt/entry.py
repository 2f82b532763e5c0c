"""The `auth_jwt` policy's registry entry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from potok.policies.auth_jwt.config import AuthJwtConfig
from potok.policies.auth_jwt.policy import build
from potok.policies.base import Stage
from potok.policies.entry import PolicyEntry, PolicyPlace, Problem

if TYPE_CHECKING:
    from potok.config.models import GatewayConfig


def consumed(config: AuthJwtConfig) -> tuple[str, ...]:
    """The token's header stays at the gateway unless `forward_token` (or none is read)."""
    return (config.header,) if config.auth != "none" and not config.forward_token else ()


def problems(config: AuthJwtConfig, place: PolicyPlace, gateway: GatewayConfig) -> list[Problem]:
    if config.token_service and not gateway.auth.token_service.enabled:
        return [(f"{place.path}.token_service", "needs auth.token_service.enabled: true")]
    return []


# Not on the own API: its endpoints authenticate their callers themselves.
ENTRY = PolicyEntry(
    name="auth_jwt",
    config=AuthJwtConfig,
    build=build,
    stage=Stage.AUTHENTICATE,
    rank=10,
    description="JWT bearer authentication.",
    consumes=consumed,
    check=problems,
)
