"""The `headers` policy: set or remove request and response headers."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from potok.policies.base import BuildContext, Headers, Policy, Stage
from potok.policies.headers.config import HeaderChanges, HeadersConfig

if TYPE_CHECKING:
    from potok.exchange import Exchange


def _compile(changes: HeaderChanges) -> Callable[[Headers], Headers] | None:
    """A function applying the changes to a header list, or None when there are none."""
    added = [(name.encode(), value.encode()) for name, value in changes.set.items()]
    dropped = frozenset(name.lower().encode() for name in (*changes.set, *changes.remove))
    if not dropped:
        return None

    def apply(headers: Headers) -> Headers:
        kept = [pair for pair in headers if pair[0].lower() not in dropped]
        kept.extend(added)
        return kept

    return apply


def build(config: HeadersConfig | None, context: BuildContext) -> Policy | None:
    if config is None:
        return None
    on_request = _compile(config.request)
    on_response = _compile(config.response)
    if on_request is None and on_response is None:
        return None

    def request_hook(exchange: Exchange) -> None:
        exchange.headers = on_request(exchange.headers)  # type: ignore[misc]

    def response_hook(exchange: Exchange, headers: Headers) -> Headers:
        return on_response(headers)  # type: ignore[misc]

    return Policy(
        name="headers",
        stage=Stage.TRANSFORM,
        on_request=request_hook if on_request is not None else None,
        on_response=response_hook if on_response is not None else None,
    )
