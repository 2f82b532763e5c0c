"""One Redis client per worker process, shared by every policy that needs Redis.

Created on first use through `Resources` (so a config without Redis opens no
connection) and closed with the worker. redis-py's own retries are off: the
callers decide what a failure means (a rate limiter fails open or closed at
once instead of retrying into its timeout).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

if TYPE_CHECKING:
    from potok.config.redis import RedisConfig
    from potok.resources import Resources


def shared_redis(resources: Resources, config: RedisConfig) -> Redis:
    """The worker's client for `config.url`, created and registered for closing once."""

    def create() -> Redis:
        pool: Any = BlockingConnectionPool.from_url(
            config.url,
            max_connections=config.max_connections,
            timeout=None,  # waiting for a free connection is bounded by the caller's timeout
            socket_connect_timeout=config.connect_timeout,
            socket_timeout=None,  # likewise: callers wrap each operation in their timeout
            retry=Retry(NoBackoff(), 0),
        )
        client = Redis.from_pool(pool)  # the client owns the pool and closes it
        resources.on_close(client.aclose)
        return client

    client: Redis = resources.get(f"redis:{config.url}", create)
    return client
