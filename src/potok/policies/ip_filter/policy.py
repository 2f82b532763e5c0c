"""The `ip_filter` policy: 403 for client addresses the route does not take.

A verdict per address is memoised (bounded), as for trusted proxies: parsing an
address and walking the networks costs microseconds, a dict lookup does not.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from potok.errors import GatewayError
from potok.identity import audit as events
from potok.observability.metrics import MetricsRegistry
from potok.policies.base import BuildContext, Policy, Stage
from potok.policies.ip_filter.config import IpFilterConfig

if TYPE_CHECKING:
    from potok.exchange import Exchange

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Forbidden(GatewayError):
    status = 403
    title = "Forbidden"


class AddressRules:
    """Deny wins; a non-empty allow list admits only its members."""

    _CACHE_LIMIT = 4096

    def __init__(self, allow: tuple[str, ...], deny: tuple[str, ...]) -> None:
        self.allow: tuple[Network, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in allow
        )
        self.deny: tuple[Network, ...] = tuple(ipaddress.ip_network(c, strict=False) for c in deny)
        self._cache: dict[str, bool] = {}

    def admits(self, ip: str) -> bool:
        verdict = self._cache.get(ip)
        if verdict is None:
            verdict = self._decide(ip)
            if len(self._cache) >= self._CACHE_LIMIT:
                self._cache.clear()
            self._cache[ip] = verdict
        return verdict

    def _decide(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False  # not an address (a unix socket peer): only an open route takes it
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # dual-stack listeners see IPv4 clients this way
        if any(address in network for network in self.deny):
            return False
        return not self.allow or any(address in network for network in self.allow)


def build(config: IpFilterConfig | None, context: BuildContext) -> Policy | None:
    if config is None:
        return None
    rules = AddressRules(config.allow, config.deny)
    registry = context.metrics if context.metrics is not None else MetricsRegistry()
    denied = registry.counter(
        "ip_filter_denied_total", "Requests refused by the ip_filter policy.", ("route",)
    )
    label = (context.route_name,)
    route = context.route_name
    audit = context.identity.audit if context.identity is not None else None

    def check(exchange: Exchange) -> None:
        if not rules.admits(exchange.client_ip):
            denied.inc(label)
            if audit is not None:  # a buffer append: no I/O on the request path
                audit.record(
                    events.REQUEST_DENIED,
                    "403",
                    ip=exchange.client_ip,
                    route=route,
                    request_id=exchange.request_id,
                    detail={"policy": "ip_filter", "reason": "address not allowed"},
                )
            raise Forbidden("your address may not use this route")

    return Policy(name="ip_filter", stage=Stage.EDGE, on_request=check)
