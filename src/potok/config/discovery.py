"""Config of DNS discovery: targets given by a host name are re-resolved while running."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from potok.config.base import ConfigModel
from potok.config.units import Duration


class DnsDiscoveryConfig(ConfigModel):
    """Re-resolve every target given by a host name; each A/AAAA record becomes a target.

    The standard resolver (getaddrinfo) does not return record TTLs, so the refresh is
    not TTL-driven: it runs `min_refresh` after a change (new or removed addresses, a name
    that stopped or started resolving) and backs off, doubling, to `max_refresh` while
    nothing changes. A name that stops resolving keeps its last good addresses.
    """

    min_refresh: Duration = Field(
        1.0,
        description=(
            "Shortest wait between two resolutions of the service's names (after a change "
            "or a failure)."
        ),
    )
    max_refresh: Duration = Field(
        10.0,
        description=(
            "Longest wait between two resolutions, reached by doubling while the answers "
            "stay the same: how late a new or removed address is noticed at worst."
        ),
    )
    family: Literal["any", "ipv4", "ipv6"] = Field(
        "any", description="Which records become targets: A and AAAA, A only, or AAAA only."
    )
    timeout: Duration = Field(
        5.0, description="A resolution slower than this counts as failed (last addresses kept)."
    )

    @model_validator(mode="after")
    def _bounds(self) -> DnsDiscoveryConfig:
        if self.max_refresh < self.min_refresh:
            raise ValueError("max_refresh must be at least min_refresh")
        return self
