"""The `dummy` policy: `X-Dummy: <value>; route=<route name>` on every answer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from potok.policies.base import BuildContext, Headers, Policy, Stage
from tests.support.dummy_policy.config import DummyConfig

if TYPE_CHECKING:
    from potok.exchange import Exchange


def build(config: DummyConfig | None, context: BuildContext) -> Policy | None:
    if config is None:
        return None
    stamp = (b"X-Dummy", f"{config.value}; route={context.route_name}".encode())

    def add(exchange: Exchange, headers: Headers) -> Headers:
        headers.append(stamp)
        return headers

    return Policy(name="dummy", stage=Stage.AUTHORIZE, on_response=add)
