"""A worker's webhook machinery: metrics, the outbox and the forwarder.

Created once per worker through `Resources` (it outlives config snapshots: a reload
re-compiles the sources and hands the forwarder the new services, the outbox stays
open), started by the worker after identity and realtime, closed at shutdown.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from potok.webhooks.forwarder import Forwarder
from potok.webhooks.metrics import WebhookMetrics
from potok.webhooks.outbox import open_outbox
from potok.webhooks.signing import DeliverySigner
from potok.webhooks.sources import Source, compile_source

if TYPE_CHECKING:
    from potok.observability.metrics import MetricsRegistry
    from potok.realtime.service import Realtime
    from potok.resources import Resources
    from potok.upstream.service import Service
    from potok.webhooks.config import WebhooksConfig

log = structlog.get_logger("potok.webhooks")

RESOURCE_KEY = "webhooks"


class Webhooks:
    def __init__(
        self, config: WebhooksConfig, registry: MetricsRegistry | None, realtime: Realtime | None
    ) -> None:
        self.config = config
        self.metrics = WebhookMetrics(registry)
        self.outbox = open_outbox(config.outbox)
        self.forwarder = Forwarder(self.outbox, self.metrics, realtime)
        self._outbox_url = config.outbox.url
        self.started = False
        self.starting: asyncio.Task[None] | None = None  # a start begun by a reload

    def configure(self, config: WebhooksConfig, services: dict[str, Service]) -> dict[str, Source]:
        """Compile the sources of a (new) config and give the forwarder its services."""
        if config.outbox.url != self._outbox_url:
            log.warning("webhooks.outbox.url changed: it takes effect after a restart")
        self.config = config
        sources = {name: compile_source(name, s) for name, s in config.sources.items()}
        secret = config.delivery.signing_secret
        signer = DeliverySigner(secret) if secret is not None else None
        self.forwarder.configure(config, sources, services, signer)
        return sources

    async def start(self) -> None:
        if self.started:
            return
        self.started = True
        await self.outbox.start()
        if self.config.forward:
            self.forwarder.start()
        log.info("webhooks ready", outbox=self.outbox.name, sources=len(self.config.sources))

    def delivery_stored(self) -> None:
        self.forwarder.wake()

    async def close(self) -> None:
        await self.forwarder.close()
        await self.outbox.close()


def shared_webhooks(
    config: WebhooksConfig | None,
    resources: Resources,
    registry: MetricsRegistry | None,
    realtime: Realtime | None,
) -> Webhooks | None:
    """The worker's webhook machinery (None without a `webhooks:` section)."""
    if config is None:
        return None

    def create() -> Webhooks:
        webhooks = Webhooks(config, registry, realtime)
        resources.on_close(webhooks.close)
        return webhooks

    webhooks: Webhooks = resources.get(RESOURCE_KEY, create)
    return webhooks
