"""The top-level `redis:` section: the shared store several gateway instances agree through."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from potok.config.base import ConfigModel
from potok.config.units import Duration

_PREFIX = re.compile(r"^[A-Za-z0-9_.:{}-]{0,64}$")


class RedisConfig(ConfigModel):
    """One Redis server (or a Sentinel-managed primary behind one address) shared by every
    instance: rate-limit counters live here, so limits hold across the whole cluster."""

    url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="redis://[user:password@]host:port/db, rediss:// for TLS, or unix:///path.",
    )
    key_prefix: str = Field(
        "potok:",
        description=(
            "Put in front of every key, so several gateways (or environments) can share one "
            "server without seeing each other's counters."
        ),
    )
    timeout: Duration = Field(
        0.25,
        description=(
            "Longest wait for one store operation (a batch of rate-limit checks). Past it the "
            "store counts as down and each policy's on_store_error decides: no request waits "
            "longer."
        ),
    )
    connect_timeout: Duration = Field(1.0, description="Opening a connection to Redis.")
    max_connections: int = Field(
        8,
        ge=1,
        le=1024,
        description=(
            "Connections per worker process. Checks are batched per event-loop tick, so a "
            "few connections carry any request rate."
        ),
    )
    retry_interval: Duration = Field(
        1.0,
        description=(
            "After a failure, operations fail at once for this long before Redis is tried "
            "again, so an outage costs one timeout, not one per request."
        ),
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"{value!r}: use redis://, rediss:// or unix://")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError(f"{value!r}: no host")
        return value

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _PREFIX.match(value):
            raise ValueError("at most 64 of letters, digits and _ . : - { }")
        return value
