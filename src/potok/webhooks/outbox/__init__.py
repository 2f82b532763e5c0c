"""The outbox: accepted deliveries, written durably before the sender's 2xx, claimed by
forwarders, kept as replay keys until purged. SQLite (one host) or PostgreSQL (a cluster)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from potok.webhooks.outbox.base import Delivery, NewDelivery, Outbox
from potok.webhooks.outbox.postgres import PostgresOutbox
from potok.webhooks.outbox.sqlite import SqliteOutbox

if TYPE_CHECKING:
    from potok.webhooks.config import OutboxConfig

__all__ = ["Delivery", "NewDelivery", "Outbox", "open_outbox"]


def open_outbox(config: OutboxConfig) -> Outbox:
    """The configured backend (not yet started)."""
    if config.is_sqlite:
        return SqliteOutbox(config)
    return PostgresOutbox(config)
