"""Event bus backends behind one interface (`base.EventBus`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from potok.realtime.bus.base import BusUnavailable, EventBus, Published
from potok.realtime.bus.memory import MemoryBus
from potok.realtime.bus.nats import NatsBus
from potok.realtime.bus.redis import RedisBus
from potok.realtime.dedup import DedupWindow
from potok.realtime.history import MemoryHistory
from potok.redis_clients import redis_client

if TYPE_CHECKING:
    from potok.config.models import GatewayConfig
    from potok.realtime.config import RealtimeConfig

__all__ = ["BusUnavailable", "EventBus", "Published", "build_bus"]


def build_bus(config: RealtimeConfig, gateway: GatewayConfig) -> EventBus:
    """The configured backend, created without I/O (it connects in `start`)."""
    backend = config.bus.backend
    if backend == "redis":
        # The bus's own URL, if given, with the `redis:` section's other settings.
        client = redis_client(gateway.redis, config.bus.redis.url)
        prefix = gateway.redis.key_prefix if gateway.redis else "potok:"
        return RedisBus(config, client, prefix)
    if backend == "nats":
        return NatsBus(config)
    history = config.history
    return MemoryBus(
        MemoryHistory(history.size, history.ttl, history.max_channels),
        DedupWindow(config.dedup_window, config.dedup_size),
    )
