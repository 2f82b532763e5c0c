"""What a policy is, and the stages that fix the order policies run in."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from potok.exchange import ResponseHook
from potok.policies.response import ResponseFilterFactory

if TYPE_CHECKING:
    from potok.config.redis import RedisConfig
    from potok.exchange import Exchange
    from potok.http.settings import ServerSettings
    from potok.identity.services import IdentityServices
    from potok.observability.metrics import MetricsRegistry
    from potok.resources import Resources

Headers = list[tuple[bytes, bytes]]


Waiting = asyncio.Future[None]
"""What `on_request` returns when it must wait: done with None to go on, or with the
`GatewayError` that refuses the request."""


class Suspended:
    """The type of `SUSPENDED`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "SUSPENDED"


SUSPENDED = Suspended()
"""What `on_request` returns when the request waits for an answer the policy will get
later (a batched store's reply): the policy then calls `exchange.resume(refusal)` (the
pipeline that suspended it goes on) exactly once — later, never before the hook has
returned. Cheaper than a `Waiting` future: no future, no done-callback, no loop
iteration to go on."""

RequestOutcome = Waiting | Suspended | None
"""What `on_request` returns: None to go on at once, or how the request waits."""


class Stage(IntEnum):
    """Policies run in stage order whatever order the YAML lists them in."""

    EDGE = 10  # ip filter, cors, request size
    AUTHENTICATE = 20
    AUTHORIZE = 30
    LIMIT = 40
    VALIDATE = 50
    CACHE = 60
    TRANSFORM = 70


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a policy may need when it is built (once per route per config load)."""

    route_name: str
    settings: ServerSettings
    services: dict[str, Any]
    resources: Resources
    identity: IdentityServices | None = None  # users, keys, denylist, audit (one per worker)
    metrics: MetricsRegistry | None = None  # None outside a worker (potok routes, tests)
    redis: RedisConfig | None = None  # the top-level `redis:` section, if configured
    own_api: bool = False  # a route of the gateway's own API (`api.policies`)


@dataclass(frozen=True, slots=True)
class Policy:
    """A built policy: up to three hooks, each optional.

    `on_request` runs before the upstream stage and refuses by raising a
    `GatewayError`; when it must wait for an answer that others' requests share (a
    batched store), it returns `SUSPENDED` (and calls `exchange.resume` itself) or a
    `Waiting` future (and the pipeline goes on when that is done) — no task per
    request either way. `on_request_async` is a coroutine for
    policies that must wait on their own I/O (a task is created per request on routes
    that have one). `on_response` may change the response headers before they are sent.
    `response_filter` opens a filter on a proxied response's head, body and end
    (policies/response.py): compression, a cache, webhook recording.
    """

    name: str
    stage: Stage
    on_request: Callable[[Exchange], RequestOutcome] | None = None
    on_request_async: Callable[[Exchange], Awaitable[None]] | None = None
    on_response: ResponseHook | None = None
    response_filter: ResponseFilterFactory | None = None
