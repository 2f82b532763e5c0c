"""The `rate_limit` policy's registry entry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from potok.policies.base import Stage
from potok.policies.entry import PolicyEntry, PolicyPlace, Problem
from potok.policies.rate_limit.config import RateLimitConfig
from potok.policies.rate_limit.policy import build

if TYPE_CHECKING:
    from potok.config.models import GatewayConfig


def problems(config: RateLimitConfig, place: PolicyPlace, gateway: GatewayConfig) -> list[Problem]:
    """The store must exist and count once for the whole gateway."""
    field = f"{place.path}.store"
    workers = gateway.server.workers
    if config.store == "redis" and gateway.redis is None:
        return [(field, "'redis' needs the top-level `redis:` section")]
    if config.store == "memory" and workers > 1:
        return [
            (
                field,
                f"the memory store counts in each of the {workers} worker processes, so a "
                f"client would get {workers}x the limit; use store: redis (with a top-level "
                "`redis:` section) or one worker",
            )
        ]
    return []


ENTRY = PolicyEntry(
    name="rate_limit",
    config=RateLimitConfig,
    build=build,
    stage=Stage.LIMIT,
    rank=10,
    description="Requests per window per client, user, key or route (429).",
    own_api=True,
    api_description=(
        "Requests per window per client on the own API (login, refresh, docs); "
        "never probes or metrics."
    ),
    check=problems,
)
