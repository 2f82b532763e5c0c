"""The `concurrency_limit` policy: refuse a key's request while it has `max` in flight.

A slot is held by the exchange itself and counts until that exchange stops being
the one its connection is answering (`connection.is_current`): after the last
byte, an abort, a timeout or the client leaving. So no code path can forget to
release a slot: finished holders are dropped when a key reaches its limit, and a
sweep once a second lets go of the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from potok.errors import GatewayError
from potok.observability.metrics import MetricsRegistry
from potok.policies.base import BuildContext, Policy, Stage
from potok.policies.concurrency_limit.config import ConcurrencyLimitConfig
from potok.policies.rate_limit.keys import key_function

if TYPE_CHECKING:
    from potok.exchange import Exchange

T = TypeVar("T")

SWEEP_INTERVAL = 1.0


class TooManyInFlight(GatewayError):
    title = "Too many requests in flight"


class InFlight(Generic[T]):
    """Holders per key, at most `limit` alive at once; `alive(holder)` says whether one
    still holds its slot. Pure: no clock, no loop."""

    __slots__ = ("alive", "held", "limit")

    def __init__(self, limit: int, alive: Callable[[T], bool]) -> None:
        self.limit = limit
        self.alive = alive
        self.held: dict[str, list[T]] = {}

    def acquire(self, key: str, holder: T) -> bool:
        held = self.held.get(key)
        if held is None:
            self.held[key] = [holder]
            return True
        if len(held) >= self.limit:
            alive = self.alive
            held[:] = [h for h in held if alive(h)]
            if len(held) >= self.limit:
                return False
        held.append(holder)
        return True

    def count(self, key: str) -> int:
        return sum(1 for h in self.held.get(key, ()) if self.alive(h))

    def sweep(self) -> None:
        """Forget holders that finished, and keys with none left."""
        alive = self.alive
        for key in list(self.held):
            kept = [h for h in self.held[key] if alive(h)]
            if kept:
                self.held[key] = kept
            else:
                del self.held[key]


def _in_flight(exchange: Exchange) -> bool:
    return exchange.is_current()


def build(config: ConcurrencyLimitConfig | None, context: BuildContext) -> Policy | None:
    if config is None:
        return None
    slots: InFlight[Exchange] = InFlight(config.max, _in_flight)
    key_of = key_function(config.key)
    registry = context.metrics if context.metrics is not None else MetricsRegistry()
    rejected = registry.counter(
        "concurrency_limit_rejections_total",
        "Requests refused because their key had too many in flight.",
        ("route",),
    )
    label = (context.route_name,)
    status = config.status
    sweeping: list[asyncio.TimerHandle] = []

    def sweep() -> None:
        sweeping.clear()
        slots.sweep()
        if slots.held:
            sweeping.append(asyncio.get_running_loop().call_later(SWEEP_INTERVAL, sweep))

    def check(exchange: Exchange) -> None:
        if not slots.acquire(key_of(exchange), exchange):
            rejected.inc(label)
            error = TooManyInFlight(
                f"at most {config.max} requests of one client may be in flight at once",
                headers=((b"Retry-After", b"1"),),
            )
            error.status = status
            raise error
        if not sweeping:
            sweeping.append(asyncio.get_running_loop().call_later(SWEEP_INTERVAL, sweep))

    return Policy(name="concurrency_limit", stage=Stage.LIMIT, on_request=check)
