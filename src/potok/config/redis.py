"""The top-level `redis:` section: the shared store several gateway instances agree through."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from potok.config.base import ConfigModel
from potok.config.paths import ConfigPath
from potok.config.units import Duration

_PREFIX = re.compile(r"^[A-Za-z0-9_.:{}-]{0,64}$")


class RedisTlsConfig(ConfigModel):
    """TLS to Redis (rediss:// URLs): whose certificate to trust, and the gateway's own."""

    ca_file: ConfigPath | None = Field(
        None,
        description=(
            "PEM bundle of CAs trusted for the server's certificate, beside the system's "
            "(a private CA). The host name is always checked."
        ),
    )
    cert_file: ConfigPath | None = Field(
        None, description="PEM client certificate, for servers that require one (mutual TLS)."
    )
    key_file: ConfigPath | None = Field(None, description="PEM private key of `cert_file`.")

    @model_validator(mode="after")
    def _pair(self) -> RedisTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give 'cert_file' and 'key_file' together")
        return self


class RedisConfig(ConfigModel):
    """One Redis server (or a Sentinel-managed primary behind one address) shared by every
    instance: rate-limit counters live here, so limits hold across the whole cluster. Every
    Redis connection the gateway opens (rate limiting, revocation events, the realtime bus,
    also when those name another URL) takes its settings from this section
    (`potok/redis_clients.py`)."""

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
            "Most connections in each redis-py pool of a worker (revocation events, the "
            "realtime bus; a subscription holds one). Rate limiting batches its checks per "
            "event-loop tick on one connection of its own."
        ),
    )
    health_check_interval: Duration = Field(
        30.0,
        description=(
            "A pooled connection idle this long is checked with PING before it is used again "
            "(redis-py pools), so a connection a firewall or a Redis restart dropped is found "
            "before a command is lost on it."
        ),
    )
    tls: RedisTlsConfig = Field(
        default_factory=RedisTlsConfig, description="TLS settings for rediss:// URLs."
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
