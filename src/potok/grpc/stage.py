"""The terminal stage of a route marked `grpc`: checks the call, then a `GrpcCall`.

Built once per route at config load (runtime.py). Per call it drops the headers the
route's policies consumed (like the HTTP proxy stage), refuses what cannot be a gRPC
call through this gateway (HTTP/1.1, another content type, a malformed `grpc-timeout`),
and bounds the call by the route's timeout and the client's `grpc-timeout`.

The route's response filters (cache, compress) do not apply: a gRPC body is a stream of
length-prefixed messages with its own compression, and the answer is in the trailers.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from potok.grpc.call import GrpcCall
from potok.grpc.status import is_grpc_content_type
from potok.grpc.timeout import BadTimeout, parse_timeout
from potok.http2.stream import Http2Stream

if TYPE_CHECKING:
    from potok.exchange import Exchange, Headers, RoutePipeline
    from potok.upstream.retry import RetryPolicy
    from potok.upstream.service import Service


class GrpcStage:
    """The terminal stage of a gRPC route."""

    __slots__ = ("_drop", "_extra", "_hooks", "_preserve_host", "_retry", "_service")

    def __init__(
        self,
        service: Service,
        drop: frozenset[bytes],
        extra: Headers,
        retry: RetryPolicy | None,
        preserve_host: bool,
    ) -> None:
        self._service = service
        self._drop = drop
        self._extra = extra
        self._retry = retry
        self._preserve_host = preserve_host
        self._hooks: RoutePipeline | None = None

    def bind(self, pipeline: RoutePipeline) -> None:
        self._hooks = pipeline

    def __call__(self, exchange: Exchange) -> None:
        client = exchange.connection
        if not isinstance(client, Http2Stream):
            exchange.body.detach()
            exchange.problem(
                505,
                "this route serves gRPC, which needs HTTP/2 (h2c with prior knowledge on a "
                "plain listener, ALPN h2 on TLS); the request came over HTTP/1.1",
            )
            return
        if not is_grpc_content_type(exchange.header(b"content-type")):
            exchange.body.detach()
            exchange.problem(415, "this route serves gRPC: content-type must be application/grpc")
            return
        deadline = exchange.deadline
        grpc_timeout = exchange.header(b"grpc-timeout")
        if grpc_timeout is not None:
            try:
                seconds = parse_timeout(grpc_timeout)
            except BadTimeout as exc:
                exchange.body.detach()
                exchange.problem(400, str(exc))
                return
            deadline = min(deadline, time.perf_counter() + seconds)
        if self._drop:
            drop = self._drop
            exchange.headers = [
                pair for pair in exchange.headers if pair[0].replace(b"_", b"-") not in drop
            ]
        pipeline = self._hooks
        GrpcCall(
            exchange,
            client,
            self._service,
            extra=self._extra,
            retry=self._retry,
            hooks=pipeline.response_hooks if pipeline is not None else (),
            deadline=deadline,
            grpc_timeout=grpc_timeout is not None,
            preserve_host=self._preserve_host,
        ).start()
