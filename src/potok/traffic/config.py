"""A route's variants: `services: [{name, weight}]`, `canary:` rules, `sticky:`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from potok.config.base import ConfigModel


class WeightedService(ConfigModel):
    """One variant of a weighted route."""

    name: str = Field(description="A service under `services`.")
    weight: int = Field(
        1, ge=0, le=1_000_000, description="Share of the traffic the rules leave to weights."
    )


class CanaryRule(ConfigModel):
    """Sends matching requests to one variant, before the weights are consulted."""

    header: str | None = Field(None, description="A request header whose value decides.")
    cookie: str | None = Field(None, description="A cookie whose value decides.")
    claim: Literal["sub", "org", "role", "scope"] | None = Field(
        None,
        description=(
            "A claim of the authenticated caller (the route needs auth_jwt or auth_api_key "
            "before it): 'sub', 'org', or 'role' / 'scope' (any of the caller's)."
        ),
    )
    values: tuple[str, ...] = Field(
        min_length=1, description="Values that match (exact, case-sensitive)."
    )
    service: str = Field(description="The variant (one of the route's `services`) they go to.")

    @model_validator(mode="after")
    def _one_source(self) -> CanaryRule:
        given = [n for n in ("header", "cookie", "claim") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of header, cookie or claim")
        return self


Sticky = Literal["none", "user", "client_ip"]
