"""One background POST to a service: a forwarded webhook delivery.

The call itself is the gateway's one way of making a request whose whole answer it
waits for (`upstream/buffered_call.py`: the service's targets, balancer, keep-alive
pools, circuit breaker, bulkhead and target health, as a proxied request). A delivery
has no client and its retries are the forwarder's (hours, not the route's
milliseconds): one attempt here, the answer's body read and dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from potok.upstream.buffered_call import BufferedCall, CallFailed

if TYPE_CHECKING:
    from potok.upstream.service import Service
    from potok.upstream.target import Target

__all__ = ["CallFailed", "post", "request_head"]


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
    if service.api_key_header is not None:
        headers = [*headers, service.api_key_header]

    def head(target: Target, trace_lines: bytes) -> bytes:
        return request_head(target, path, headers, len(body))

    call = BufferedCall(service, "POST", head, body, within=within, max_body=None, retry=None)
    return (await call.run()).status
