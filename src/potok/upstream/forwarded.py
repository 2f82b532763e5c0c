"""X-Forwarded-For/Proto/Host, Forwarded and X-Real-IP: believed only from configured
trusted proxies."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from potok.exchange import Exchange


class TrustedProxies:
    """Membership tests against a CIDR list, memoised per address (parsing IPs is slow)."""

    __slots__ = ("_cache", "_networks")

    _CACHE_LIMIT = 4096

    def __init__(self, cidrs: tuple[str, ...]) -> None:
        self._networks = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
        self._cache: dict[str, bool | None] = {}

    def __bool__(self) -> bool:
        return bool(self._networks)

    def contains(self, ip: str) -> bool:
        return self.classify(ip) is True

    def classify(self, ip: str) -> bool | None:
        """True: a trusted proxy; False: some other address; None: not an IP address."""
        if ip in self._cache:
            return self._cache[ip]
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            result = None
        else:
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped  # a dual-stack listener sees IPv4 peers this way
            result = any(address in network for network in self._networks)
        if len(self._cache) >= self._CACHE_LIMIT:
            self._cache.clear()
        self._cache[ip] = result
        return result


def apply_forwarding(exchange: Exchange, trusted: TrustedProxies, scheme: bytes = b"http") -> None:
    """Set the client IP and the X-Forwarded-* values to send upstream.

    From an untrusted peer, incoming X-Forwarded-* are replaced and Forwarded and
    X-Real-IP dropped (the connection set them aside): the peer is the client. From a
    trusted proxy, the chain is kept and the client is the right-most address not itself
    a trusted proxy; its Forwarded and X-Real-IP go upstream as it sent them.
    `scheme`: the listener's (b"https" on TLS), the proto unless a trusted proxy said one.
    """
    peer = exchange.peer_ip
    if not trusted or not trusted.contains(peer):
        exchange.client_ip = peer
        exchange.forwarded_for = peer.encode()
        exchange.forwarded_proto = scheme
        exchange.forwarded_host = exchange.host
        return
    chain = exchange.forwarded_for
    client = peer
    if chain:
        for hop in reversed(chain.split(b",")):
            address = hop.strip().decode("latin-1")
            kind = trusted.classify(address)
            if kind is None:
                break  # junk: the last address we could check stands as the client
            client = address
            if not kind:
                break
        exchange.forwarded_for = chain + b", " + peer.encode()
    else:
        exchange.forwarded_for = peer.encode()
    if exchange.proxy_headers is not None:
        exchange.headers.extend(exchange.proxy_headers)
    exchange.client_ip = client
    if exchange.forwarded_proto is None:
        exchange.forwarded_proto = scheme
    if exchange.forwarded_host is None:
        exchange.forwarded_host = exchange.host
