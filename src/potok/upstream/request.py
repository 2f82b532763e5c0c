"""The request head sent upstream, assembled from per-route parts prepared at load."""

from __future__ import annotations

from typing import TYPE_CHECKING

from potok.http.http11 import header_block

if TYPE_CHECKING:
    from potok.exchange import Exchange
    from potok.upstream.target import Target

_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})


class RequestHeadBuilder:
    """Builds `METHOD path HTTP/1.1` + headers for one route; static parts are bytes already."""

    __slots__ = ("_preserve_host", "_static")

    def __init__(self, static_headers: list[tuple[bytes, bytes]], preserve_host: bool) -> None:
        self._static = header_block(static_headers)
        self._preserve_host = preserve_host

    def __call__(self, exchange: Exchange, target: Target) -> bytes:
        host = exchange.host if self._preserve_host and exchange.host else target.host_header
        body = exchange.body
        if exchange.content_length is not None:
            framing = b"Content-Length: %d\r\n" % exchange.content_length
        elif not body.complete:
            framing = b"Transfer-Encoding: chunked\r\n"
        elif body.received or exchange.method in _BODY_METHODS:
            framing = b"Content-Length: %d\r\n" % body.received
        else:
            framing = b""
        if exchange.upgrade is not None:
            framing += b"Connection: upgrade\r\nUpgrade: " + exchange.upgrade + b"\r\n"
        identity = exchange.identity
        return b"".join(
            (
                exchange.method,
                b" ",
                exchange.upstream_path,
                exchange.query,
                b" HTTP/1.1\r\nHost: ",
                host,
                b"\r\n",
                header_block(exchange.headers),
                # After the client's headers, whose copies of these were dropped: only the
                # gateway sets them (identity.upstream_lines, rendered once per principal).
                identity.upstream_lines if identity is not None else b"",
                b"X-Forwarded-For: ",
                exchange.forwarded_for or b"",
                b"\r\nX-Forwarded-Proto: ",
                exchange.forwarded_proto or b"http",
                b"\r\nX-Forwarded-Host: ",
                exchange.forwarded_host or b"",
                b"\r\nX-Request-ID: ",
                exchange.request_id.encode(),
                b"\r\n",
                exchange.trace_lines,
                self._static,
                framing,
                b"\r\n",
            )
        )
