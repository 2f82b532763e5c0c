"""A source compiled once per config load: verifier, allow-list, headers to keep."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from potok.webhooks.presets import build_verifier

if TYPE_CHECKING:
    from potok.webhooks.config import SourceConfig
    from potok.webhooks.verification import Verifier

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ALLOW_CACHE = 4096  # client addresses remembered per source (bounded)
# Kept from every delivery (what the body is); hop-by-hop and credentials never.
ALWAYS_KEPT = (b"content-type",)


@dataclass(slots=True)
class Source:
    name: str
    config: SourceConfig
    verifier: Verifier
    networks: tuple[Network, ...]
    kept: tuple[bytes, ...]  # lower-case header names stored and forwarded
    upstream_path: bytes
    channel: str
    _allowed: dict[str, bool] = field(default_factory=dict)

    def allows(self, client_ip: str) -> bool:
        """Whether the allow-list admits the client (memoised per address)."""
        known = self._allowed.get(client_ip)
        if known is not None:
            return known
        try:
            address = ipaddress.ip_address(client_ip)
            verdict = any(address in network for network in self.networks)
        except ValueError:
            verdict = False
        if len(self._allowed) >= ALLOW_CACHE:
            self._allowed.clear()
        self._allowed[client_ip] = verdict
        return verdict


def compile_source(name: str, config: SourceConfig) -> Source:
    verifier = build_verifier(config)
    kept = dict.fromkeys(
        (*ALWAYS_KEPT, *verifier.forwarded, *(h.lower().encode() for h in config.forward_headers))
    )
    return Source(
        name=name,
        config=config,
        verifier=verifier,
        networks=tuple(ipaddress.ip_network(c, strict=False) for c in config.allow_ips),
        kept=tuple(kept),
        upstream_path=config.upstream_path.encode(),
        channel=f"webhooks.{name}",
    )
