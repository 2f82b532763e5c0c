"""One background POST to a service, through the service's own targets, balancer,
keep-alive pools, circuit breaker and target health (upstream/), not another client.

The proxy's `ProxyCall` streams a client's request and answers that client; a forwarded
delivery has no client, its body is in memory and its retries are the forwarder's (hours,
not the route's milliseconds). So this is a small `ResponseListener` of its own on the
same `UpstreamConnection`s: one attempt, a future with the status, the breaker and the
target's health told how it went — what a proxied request would tell them.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from potok.upstream.connection import DiscardingListener, UpstreamConnection

if TYPE_CHECKING:
    from potok.upstream.service import Service
    from potok.upstream.target import Target


class CallFailed(Exception):
    """No response: `kind` is connect, timeout, reset or breaker_open."""

    def __init__(self, kind: str, detail: str, retry_after: float = 0.0) -> None:
        super().__init__(detail)
        self.kind = kind
        self.retry_after = retry_after  # breaker_open: when it lets a probe through


class _Listener(DiscardingListener):
    """Waits for one response on an `UpstreamConnection`; drops the response body."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[int]) -> None:
        super().__init__()
        self.future = future

    def response_complete(self, reusable: bool) -> None:
        if not self.future.done():
            self.future.set_result(self.status if reusable else -self.status)

    def response_switching(self, headers: list[tuple[bytes, bytes]], early: bytes) -> None:
        if not self.future.done():
            self.future.set_exception(CallFailed("reset", "the service switched protocols"))

    def upstream_failed(self, reason: str, before_response: bool) -> None:
        if not self.future.done():
            self.future.set_exception(CallFailed("reset", reason))


def request_head(
    target: Target, path: bytes, headers: list[tuple[bytes, bytes]], length: int
) -> bytes:
    lines = [b"POST ", path, b" HTTP/1.1\r\nHost: ", target.host_header, b"\r\n"]
    for name, value in headers:
        lines += (name, b": ", value, b"\r\n")
    lines += (b"Content-Length: ", b"%d" % length, b"\r\n\r\n")
    return b"".join(lines)


async def post(
    service: Service,
    path: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    *,
    within: float,
) -> int:
    """The status the service answered within `within` seconds; CallFailed otherwise."""
    breaker = service.breaker
    if breaker is not None and not breaker.allow():
        service.note_breaker_rejection()
        raise CallFailed(
            "breaker_open", f"{service.name}'s circuit breaker is open", breaker.retry_after()
        )
    if service.api_key_header is not None:
        headers = [*headers, service.api_key_header]
    target = service.choose()
    target.inflight += 1
    head = request_head(target, path, headers, len(body))
    try:
        status = await _exchange(service, target, head, body, within)
    except CallFailed as exc:
        _judge(service, target, ok=False, kind=exc.kind)
        raise
    finally:
        target.inflight -= 1
    _judge(service, target, ok=status < 500, kind="5xx", status=status)
    return status


async def _exchange(
    service: Service, target: Target, head: bytes, body: bytes, within: float
) -> int:
    """On a pooled connection, and once more on a fresh one if the pooled one turns out
    to have been closed by the service (a stale keep-alive)."""
    pooled = target.pool.acquire()
    if pooled is not None:
        try:
            return await _send(pooled, target, head, body, within)
        except CallFailed as exc:
            if exc.kind != "reset" or pooled.requests_sent <= 1:
                raise
    connection = await _connect(service, target, asyncio.get_running_loop())
    return await _send(connection, target, head, body, within)


async def _send(
    connection: UpstreamConnection, target: Target, head: bytes, body: bytes, within: float
) -> int:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    connection.send_request(_Listener(future), head, head_request=False, chunked=False)
    connection.write_body(body)
    try:
        async with asyncio.timeout(within):
            status = await future
    except TimeoutError:
        connection.abort()
        raise CallFailed("timeout", f"{target.name} did not answer within {within:g}s") from None
    except CallFailed:
        connection.abort()
        raise
    if status >= 0:
        target.pool.release(connection)
    else:
        connection.close()  # complete, but not reusable
    return abs(status)


async def _connect(
    service: Service, target: Target, loop: asyncio.AbstractEventLoop
) -> UpstreamConnection:
    try:
        async with asyncio.timeout(service.connect_timeout):
            _, connection = await loop.create_connection(
                lambda: UpstreamConnection(target), target.host, target.port
            )
    except TimeoutError:
        raise CallFailed("timeout", f"connecting to {target.name} timed out") from None
    except OSError as exc:
        raise CallFailed(
            "connect", f"cannot connect to {target.name}: {exc.strerror or exc}"
        ) from None
    return connection


def _judge(service: Service, target: Target, *, ok: bool, kind: str, status: int = 0) -> None:
    """What a proxied call would tell the target's health and the breaker."""
    target.failing = not ok
    counts = not ok and service.count_failure(kind, status)
    if target.health is not None:
        if ok:
            target.health.record_success()
        elif counts:
            target.health.record_failure()
    breaker = service.breaker
    if breaker is not None:
        if ok or not counts:
            breaker.record_success()
        else:
            breaker.record_failure()
