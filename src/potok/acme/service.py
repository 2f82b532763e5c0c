"""The ACME layer of one process, built from the config: storage, lock, responder, manager."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from potok.acme.config import AcmeConfig
from potok.acme.database_store import DatabaseStore
from potok.acme.directory_store import DirectoryStore
from potok.acme.lock import OrderLock, RedisLock
from potok.acme.manager import CertificateManager
from potok.acme.responder import ChallengeResponder
from potok.acme.sink import CertificateSink
from potok.acme.store import CertificateStore
from potok.identity.database import Database

if TYPE_CHECKING:
    from potok.config.models import GatewayConfig
    from potok.observability.metrics import MetricsRegistry

REDIS_LOCK_PREFIX = "potok:acme:order-lock:"


def certificate_store(config: GatewayConfig) -> CertificateStore:
    acme = _section(config)
    if acme.storage == "directory":
        assert acme.path is not None  # the model requires it
        return DirectoryStore(acme.path)
    return DatabaseStore(Database(config.database))


def order_lock(config: GatewayConfig, store: CertificateStore) -> OrderLock:
    if _section(config).lock == "redis":
        from potok.redis_clients import redis_client  # noqa: PLC0415 - only with a redis lock

        return RedisLock(redis_client(config.redis), redis_lock_key(config))
    return store.order_lock()


def redis_lock_key(config: GatewayConfig) -> str:
    """One lock per storage: fleets with storages of their own never wait for each other."""
    acme = _section(config)
    where = acme.path if acme.storage == "directory" else config.database.url
    return REDIS_LOCK_PREFIX + hashlib.sha256(f"{acme.storage}:{where}".encode()).hexdigest()[:16]


def _section(config: GatewayConfig) -> AcmeConfig:
    if config.acme is None:
        raise ValueError("no acme: section in the config")
    return config.acme


class AcmeService:
    """What a worker runs: answers challenges, and keeps its certificates current."""

    def __init__(
        self,
        config: GatewayConfig,
        sinks: Sequence[CertificateSink] = (),
        metrics: MetricsRegistry | None = None,
    ) -> None:
        self.store = certificate_store(config)
        self.responder = ChallengeResponder(self.store)
        self.manager = CertificateManager(
            _section(config), self.store, self.responder, sinks, metrics=metrics
        )
        self.manager.use_lock(order_lock(config, self.store))

    async def start(self) -> None:
        await self.store.open()
        self.manager.start()

    async def stop(self) -> None:
        await self.manager.stop()
        await self.store.close()
