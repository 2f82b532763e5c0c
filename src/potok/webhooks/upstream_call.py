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

from potok.upstream.connection import UpstreamConnection

if TYPE_CHECKING:
    from potok.upstream.service import Service
    from potok.upstream.target import Target


class CallFailed(Exception):
    """No response: `kind` is connect, timeout, reset or breaker_open."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


class _Listener:
    """Waits for one response on an `UpstreamConnection`; drops the response body."""

    def __init__(self, future: asyncio.Future[int]) -> None:
        self.future = future
        self.status = 0

    def response_head(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        length: int | None,
        has_body: bool,
    ) -> None:
        self.status = status

    def response_informational(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        return

    def response_body(self, data: bytes) -> None:
        return

    def response_complete(self, reusable: bool) -> None:
        if not self.future.done():
            self.future.set_result(self.status if reusable else -self.status)

    def response_switching(self, headers: list[tuple[bytes, bytes]], early: bytes) -> None:
        if not self.future.done():
            self.future.set_exception(CallFailed("reset", "the service switched protocols"))

    def upstream_failed(self, reason: str, before_response: bool) -> None:
        if not self.future.done():
            self.future.set_exception(CallFailed("reset", reason))

    def flush_client(self) -> None:
        return

    def pause_client_reading(self) -> None:
        return

    def resume_client_reading(self) -> None:
        return


def request_head(
    target: Target, path: bytes, headers: list[tuple[bytes, bytes]], length: int
) -> bytes:
    lines = [b"POST ", path, b" HTTP/1.1\r\nHost: ", target.host_header, b"\r\n"]
    for name, value in headers:
        lines += (name, b": ", value, b"\r\n")
    lines += (b"Content-Length: ", b"%d" % length, b"\r\n\r\n")
    return b"".join(lines)


async def post(
    service: Service, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float
) -> int:
    """The status the service answered; CallFailed when it did not answer."""
    breaker = service.breaker
    if breaker is not None and not breaker.allow():
        service.note_breaker_rejection()
        raise CallFailed("breaker_open", f"{service.name}'s circuit breaker is open")
    if service.api_key_header is not None:
        headers = [*headers, service.api_key_header]
    target = service.choose()
    target.inflight += 1
    try:
        status = await _attempt(service, target, path, headers, body, timeout)
    except CallFailed as exc:
        _judge(service, target, ok=False, kind=exc.kind)
        raise
    finally:
        target.inflight -= 1
    _judge(service, target, ok=status < 500, kind="5xx", status=status)
    return status


async def _attempt(
    service: Service,
    target: Target,
    path: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    timeout: float,
) -> int:
    loop = asyncio.get_running_loop()
    head = request_head(target, path, headers, len(body))
    pooled = target.pool.acquire()
    for connection in (pooled, None) if pooled is not None else (None,):
        if connection is None:
            connection = await _connect(service, target, loop)
        future: asyncio.Future[int] = loop.create_future()
        connection.send_request(_Listener(future), head, head_request=False, chunked=False)
        connection.write_body(body)
        try:
            async with asyncio.timeout(timeout):
                status = await future
        except TimeoutError:
            connection.abort()
            raise CallFailed("timeout", f"{target.name} did not answer within {timeout:g}s") from None
        except CallFailed:
            connection.abort()
            if connection is pooled and connection.requests_sent > 1:
                continue  # a kept-alive connection the service had closed: once more, fresh
            raise
        if status >= 0:
            target.pool.release(connection)
        else:
            connection.close()
        return abs(status)
    raise CallFailed("reset", f"{target.name} closed the connection")  # pragma: no cover


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
        raise CallFailed("connect", f"cannot connect to {target.name}: {exc.strerror or exc}") from None
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
