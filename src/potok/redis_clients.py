"""Every Redis connection the gateway opens, made here from the one `redis:` section.

Two kinds of client, one source of settings (`RedisConfig`: URL, connect
timeout, TLS, pool size, health checks):

- `redis_client`: a redis-py asyncio client (a pool), for revocation events
  and the realtime bus: pub/sub, streams, scripts off the request path;
- `redis_endpoint`: where and how the rate limiter's own RESP connection
  (`policies/rate_limit/redis_connection.py`, measured faster than redis-py
  on the request path) connects.

A feature may name another server (`auth.revocation.redis_url`,
`realtime.bus.redis.url`): only the URL changes, the rest still comes from
the `redis:` section (or its defaults when there is none).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from potok.config.redis import RedisConfig, RedisTlsConfig


@dataclass(frozen=True, slots=True)
class RedisEndpoint:
    """A Redis server to open connections to: address, database, credentials, TLS."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a unix socket instead of host and port
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None  # rediss:// only
    connect_timeout: float = 1.0


def endpoint_from_url(
    url: str, *, connect_timeout: float = 1.0, tls: RedisTlsConfig | None = None
) -> RedisEndpoint:
    """`redis://[user:password@]host[:port][/db]`, `rediss://` (TLS) or `unix:///path[?db=N]`."""
    parts = urlsplit(url)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    query_db = int(parse_qs(parts.query).get("db", ["0"])[0])
    if parts.scheme == "unix":
        return RedisEndpoint(
            path=parts.path,
            db=query_db,
            username=username,
            password=password,
            connect_timeout=connect_timeout,
        )
    path = parts.path.strip("/")
    return RedisEndpoint(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 6379,
        db=int(path) if path else query_db,
        username=username,
        password=password,
        tls=tls_context(tls or RedisTlsConfig()) if parts.scheme == "rediss" else None,
        connect_timeout=connect_timeout,
    )


def redis_endpoint(config: RedisConfig | None, url: str | None = None) -> RedisEndpoint:
    """The endpoint of `url` (default: the section's), with the section's settings."""
    settings = config or RedisConfig()
    return endpoint_from_url(
        url or settings.url, connect_timeout=settings.connect_timeout, tls=settings.tls
    )


def tls_context(tls: RedisTlsConfig) -> ssl.SSLContext:
    """Verifies the server's host name and certificate against the system's CAs and
    `ca_file` (as redis-py does with the same files)."""
    context = ssl.create_default_context()
    if tls.ca_file is not None:
        context.load_verify_locations(cafile=tls.ca_file)
    if tls.cert_file is not None:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


def redis_client(config: RedisConfig | None, url: str | None = None) -> Redis:
    """A redis-py asyncio client of `url` (default: the section's), with the section's
    settings; created without I/O (its pool connects on first use). The caller closes it."""
    settings = config or RedisConfig()
    url = url or settings.url
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.connect_timeout,
        "max_connections": settings.max_connections,
        "health_check_interval": settings.health_check_interval,
        # One immediate retry: a pooled connection may be stale after Redis restarted.
        # Callers repeat only what is safe twice (a revocation, a de-duplicated publish).
        "retry": Retry(NoBackoff(), 1),
    }
    if urlsplit(url).scheme == "rediss":
        # The same trust as `tls_context`: redis-py takes the files, not a context.
        tls = settings.tls
        options.update(ssl_ca_certs=tls.ca_file, ssl_certfile=tls.cert_file)
        options.update(ssl_keyfile=tls.key_file, ssl_cert_reqs="required")
    client: Redis = Redis.from_url(url, **options)
    return client
