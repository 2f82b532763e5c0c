"""The terminal stage of a proxied route: the request leaves the pipeline for its service.

Built once per route at config load (runtime.py); per request it drops the headers the
route's policies consumed and starts a `ProxyCall`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from potok.upstream.proxy import ProxyCall

if TYPE_CHECKING:
    from potok.exchange import Exchange, RoutePipeline
    from potok.traffic.mirror import Mirror
    from potok.upstream.proxy import Fallback
    from potok.upstream.request import RequestHeadBuilder
    from potok.upstream.retry import RetryPolicy
    from potok.upstream.service import Service


class ProxyStage:
    """The terminal stage of a proxied route."""

    __slots__ = (
        "_build_head",
        "_drop",
        "_fallback",
        "_mirror",
        "_retry",
        "_service",
        "_stage_pipeline",
    )

    def __init__(
        self,
        service: Service,
        build_head: RequestHeadBuilder,
        drop: frozenset[bytes],
        retry: RetryPolicy | None,
        fallback: Fallback | None,
        *,
        mirror: Mirror | None = None,
    ) -> None:
        self._service = service
        self._mirror = mirror
        self._build_head = build_head
        self._drop = drop
        self._retry = retry
        self._fallback = fallback
        self._stage_pipeline: RoutePipeline | None = None

    def bind(self, pipeline: RoutePipeline) -> None:
        """The route's pipeline, built after this stage: its response hooks shape the
        upstream's answers."""
        self._stage_pipeline = pipeline

    def __call__(self, exchange: Exchange) -> None:
        # (Identity headers are not here: the connection drops clients' copies of those
        # while parsing, for every route; RequestHeadBuilder adds the gateway's own.)
        if self._drop:
            drop = self._drop
            # Underscore twins too (`X_API_Key`): WSGI/CGI servers read them as the real one.
            exchange.headers = [
                pair for pair in exchange.headers if pair[0].lower().replace(b"_", b"-") not in drop
            ]
        pipeline = self._stage_pipeline
        hooks = pipeline.response_hooks if pipeline is not None else ()
        sink = None
        if pipeline is not None and pipeline.has_response_filters:
            sink = pipeline.open_response(exchange)
            if sink is None:
                return  # a response filter answered it (a cache hit): no upstream call
            hooks = ()  # they run at the client's end of the filters (open_chain)
        if self._mirror is not None:
            self._mirror.maybe_copy(exchange)
        ProxyCall(
            exchange,
            self._service,
            self._build_head,
            hooks,
            retry=self._retry,
            fallback=self._fallback,
            sink=sink,
        ).start()
