"""The response side of the policy contract: filters that wrap the upstream call.

A policy that needs the upstream's answer (compression, a cache, webhook recording)
declares a `ResponseFilterFactory` (`Policy.response_filter`). The route's pipeline keeps
the factories in stage order, compiled once at config load. Per request, when the
upstream stage starts (every request hook has passed), the factories are opened from the
client side outwards: the first in stage order gets the exchange itself as its
downstream, each next one the filter before it. The upstream's head, body chunks and end
then flow through the chain towards the client — the shape of Envoy's encoder filters,
or of aiohttp's client middleware `(request, handler) -> response`, streamed.

A route without factories never builds a chain: the upstream stage writes to the
exchange as it always did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from potok.exchange import ResponseHook, ResponseSink

if TYPE_CHECKING:
    from potok.exchange import Exchange

Headers = list[tuple[bytes, bytes]]

__all__ = ["ANSWERED", "Answered", "ResponseFilter", "ResponseFilterFactory", "ResponseSink"]


class ResponseFilter:
    """A per-request filter: passes everything on to `downstream` unchanged.

    Subclasses override what they change. `send_head` may change the status, the
    headers or the length (None: the length is unknown, the client gets a chunked
    response); `send_body` may emit zero or more chunks per chunk it gets; `end` may
    emit a tail before ending. A filter writes through, never queues the body itself:
    the client's back-pressure then reaches the upstream as it does without filters.
    """

    __slots__ = ("downstream",)

    def __init__(self, downstream: ResponseSink) -> None:
        self.downstream = downstream

    def send_head(
        self,
        status: int,
        headers: Headers,
        *,
        reason: bytes | None = None,
        length: int | None = None,
        body: bool = True,
    ) -> None:
        self.downstream.send_head(status, headers, reason=reason, length=length, body=body)

    def send_body(self, data: bytes) -> None:
        self.downstream.send_body(data)

    def flush(self) -> None:
        self.downstream.flush()

    def end(self) -> None:
        self.downstream.end()

    def abort(self, reason: str) -> None:
        self.downstream.abort(reason)

    def unavailable(self, status: int, breaker_open: bool) -> bool:
        return self.downstream.unavailable(status, breaker_open)


class Answered:
    """The type of `ANSWERED`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ANSWERED"


ANSWERED: Final = Answered()
"""What a factory returns when it has answered the request itself through `downstream`
(a cache hit): the upstream is not called and the factories after it are not opened."""

ResponseFilterFactory = Callable[["Exchange", ResponseSink], "ResponseSink | Answered | None"]
"""A policy's `response_filter`: called once per request as the upstream stage starts.

Returns a filter wrapping `downstream` to see this request's response; None to stay
out of it (nothing of this response interests the policy: no per-chunk cost); or
`ANSWERED` after answering through `downstream` itself. Lookups that must wait (a
cache in Redis) belong in the policy's request hook, which may wait as `rate_limit`'s
does and leaves what it found in `exchange.context` for the factory to serve.
"""


class HookedSink(ResponseFilter):
    """The client's end of a chain: the route's response hooks (headers, CORS, security
    headers) shape the head every filter sends — a cache's stored answer included, so
    what a cache stores is the upstream's head, never one shaped for another client."""

    __slots__ = ("_exchange", "_hooks")

    def __init__(self, exchange: Exchange, hooks: tuple[ResponseHook, ...]) -> None:
        super().__init__(exchange)
        self._exchange = exchange
        self._hooks = hooks

    def send_head(
        self,
        status: int,
        headers: Headers,
        *,
        reason: bytes | None = None,
        length: int | None = None,
        body: bool = True,
    ) -> None:
        exchange = self._exchange
        for hook in self._hooks:
            headers = hook(exchange, headers)
        exchange.send_head(status, headers, reason=reason, length=length, body=body)


def open_chain(
    factories: tuple[ResponseFilterFactory, ...],
    exchange: Exchange,
    hooks: tuple[ResponseHook, ...] = (),
) -> ResponseSink | None:
    """The sink the upstream stage writes to for this request, or None if a filter
    answered it. The first factory in stage order is nearest to the client; the route's
    response `hooks` run nearer still (the upstream stage then runs none itself)."""
    sink: ResponseSink = HookedSink(exchange, hooks) if hooks else exchange
    for factory in factories:
        opened = factory(exchange, sink)
        if isinstance(opened, Answered):
            return None
        if opened is not None:
            sink = opened
    return sink
