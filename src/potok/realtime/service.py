"""A worker's realtime service: auth, channel rules, bus, hub, publish keys.

Created once per worker through `Resources` (it outlives Runtime snapshots:
open WebSocket connections do not notice a config reload) and started by
the worker after the identity layer.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from potok.identity.principal import Principal
from potok.realtime.auth import RealtimeAuth
from potok.realtime.bus import build_bus
from potok.realtime.bus.base import BusUnavailable, EventBus, Published
from potok.realtime.channels import ChannelRules
from potok.realtime.dedup import DedupWindow
from potok.realtime.events import Event
from potok.realtime.hub import Hub
from potok.realtime.metrics import RealtimeMetrics
from potok.realtime.websocket import RealtimeEndpoint, RealtimeSession
from potok.server.asgi_websocket import WebSocketLimits

if TYPE_CHECKING:
    from potok.config.models import GatewayConfig
    from potok.identity.services import IdentityServices
    from potok.observability.metrics import MetricsRegistry
    from potok.realtime.config import RealtimeConfig
    from potok.resources import Resources

log = structlog.get_logger("potok.realtime")

RESOURCE_KEY = "realtime"


class Realtime:
    def __init__(
        self,
        config: RealtimeConfig,
        gateway: GatewayConfig,
        identity: IdentityServices,
        registry: MetricsRegistry | None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.metrics = RealtimeMetrics(registry)
        self.auth = RealtimeAuth(config.auth, identity)
        self.rules = ChannelRules(config.channels)
        self.bus: EventBus = build_bus(config, gateway)
        self.hub = Hub(
            config.limits,
            self.metrics,
            DedupWindow(config.dedup_window, config.dedup_size),
            pending_limit=max(1000, config.history.size),
        )
        self.endpoint = RealtimeEndpoint(self)
        # Called with every bus event before the hub; one that answers True consumed it
        # (a gateway command, never delivered to clients). The cache's bus purges.
        self.listeners: list[Callable[[Event], bool]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self._static_keys = tuple((k.name, k.key.encode()) for k in config.events.keys)
        self._started = False

    async def start(self) -> None:
        # (The worker tunes the garbage collector for the many long-lived connections:
        # process/gc_tuning.py.)
        await self.bus.start(self._deliver, self.bus_error, self._bus_reconnected)
        self.hub.start()
        self._started = True
        log.info("realtime ready", bus=self.bus.name, connected=self.bus.connected)

    def _deliver(self, event: Event) -> None:
        for listener in self.listeners:
            if listener(event):
                return
        self.hub.deliver(event)

    def _bus_reconnected(self, restarted: bool) -> None:
        task = asyncio.get_running_loop().create_task(self.hub.catch_up(self.bus, restarted))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def bus_error(self, kind: str) -> None:
        self.metrics.bus_errors.inc((self.bus.name, kind))

    async def publish(self, event: Event, source: str) -> Published:
        """Publish through the bus; BusUnavailable (counted) when it is down."""
        try:
            published = await self.bus.publish(event)
        except BusUnavailable:
            self.bus_error("publish")
            raise
        self.metrics.published.inc((source,))
        return published

    def publisher(self, presented: str) -> Principal | None:
        """Who holds this service key: a configured key, or a database key with the scope."""
        raw = presented.encode()
        for name, key in self._static_keys:
            if hmac.compare_digest(raw, key):
                return Principal(subject=f"service:{name}", kind="api_key")
        mirror = self.identity.api_keys
        if mirror is not None:
            principal = mirror.authenticate(presented)
            if principal is not None and self.config.events.scope in principal.scopes:
                return principal
        return None

    def socketio_limits(self) -> WebSocketLimits:
        """Bounds for the ASGI bridge's WebSockets (Socket.IO), from `realtime.limits`."""
        limits = self.config.limits
        return WebSocketLimits(
            send_buffer=limits.send_buffer,
            max_message_bytes=max(limits.max_message_bytes, 1024 * 1024),
            close_timeout=limits.close_timeout,
            on_slow_consumer=lambda: self.metrics.slow_consumers.inc(("socketio",)),
        )

    async def shutdown(self, grace: float = 2.0) -> None:
        """Close every connection with 1001 (going away), waiting up to `grace`."""

        def close(member: object) -> None:
            if isinstance(member, RealtimeSession):
                member.going_away()

        await self.hub.shutdown(close, grace)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await self.bus.close()


def shared_realtime(
    config: GatewayConfig,
    resources: Resources,
    identity: IdentityServices,
    registry: MetricsRegistry | None,
) -> Realtime | None:
    """The worker's realtime service (None when the config has no `realtime:` section)."""
    realtime_config = config.realtime
    if realtime_config is None:
        return None

    def create() -> Realtime:
        service = Realtime(realtime_config, config, identity, registry)
        resources.on_close(service.close)
        return service

    realtime: Realtime = resources.get(RESOURCE_KEY, create)
    return realtime
