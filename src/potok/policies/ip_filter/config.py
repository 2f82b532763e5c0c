"""Config of the `ip_filter` policy: which client addresses may use the route."""

from __future__ import annotations

from pydantic import Field, model_validator

from potok.config.base import ConfigModel
from potok.config.units import Cidr


class IpFilterConfig(ConfigModel):
    """Allow and deny lists of addresses and CIDRs (IPv4 and IPv6), checked against the
    client address (X-Forwarded-For counts only through server.trusted_proxies). Deny wins;
    with an allow list, everything not on it is denied. Refusals are 403."""

    allow: tuple[Cidr, ...] = Field(
        (), description="If given, only these addresses or networks may call, e.g. 10.0.0.0/8."
    )
    deny: tuple[Cidr, ...] = Field(
        (),
        description="Addresses or networks never let in, e.g. 203.0.113.0/24, 2001:db8::/32.",
    )

    @model_validator(mode="after")
    def _something(self) -> IpFilterConfig:
        if not self.allow and not self.deny:
            raise ValueError("give `allow`, `deny` or both")
        return self
