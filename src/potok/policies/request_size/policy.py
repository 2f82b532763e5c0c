"""The `request_size` policy: refuse bodies over the limit, announced or streamed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from potok.errors import PayloadTooLarge
from potok.policies.base import BuildContext, Policy, Stage
from potok.policies.request_size.config import RequestSizeConfig

if TYPE_CHECKING:
    from potok.exchange import Exchange


def build(config: RequestSizeConfig | None, context: BuildContext) -> Policy | None:
    """Always on: without a route setting, the server-wide limit applies."""
    limit = config.max_bytes if config is not None else context.settings.max_body_bytes

    def check(exchange: Exchange) -> None:
        announced = exchange.content_length
        if announced is not None and announced > limit:
            raise PayloadTooLarge(f"request body of {announced} bytes exceeds the limit of {limit}")
        body = exchange.body
        body.max_bytes = limit
        if body.received > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")

    return Policy(name="request_size", stage=Stage.EDGE, on_request=check)
