"""The `cache` policy's registry entry."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from potok.policies.base import Stage
from potok.policies.cache.config import CacheConfig
from potok.policies.cache.policy import build
from potok.policies.entry import PolicyEntry, PolicyPlace, Problem

if TYPE_CHECKING:
    from potok.config.models import GatewayConfig


def problems(config: CacheConfig, place: PolicyPlace, gateway: GatewayConfig) -> Iterable[Problem]:
    if config.store == "redis" and gateway.redis is None:
        yield (f"{place.path}.store", "'redis' needs the top-level `redis:` section")


# Cache stage: after authentication and authorization (a hit is served only to a caller
# the route admits), and behind compress (edge), which encodes whatever it sends.
ENTRY = PolicyEntry(
    name="cache",
    config=CacheConfig,
    build=build,
    stage=Stage.CACHE,
    rank=10,
    description="An RFC 9111 shared cache of the route's upstream answers (memory or Redis).",
    check=problems,
)
