"""A route's variants: `services: [{name, weight}]`, `canary:` rules, `sticky:`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from potok.config.base import ConfigModel
from potok.config.units import ByteSize, Duration


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


class MirrorConfig(ConfigModel):
    """A copy of a share of the route's requests to a shadow service; its answers are
    discarded and never touch the client's."""

    service: str = Field(description="The shadow service (under `services`).")
    percent: float = Field(
        100.0, ge=0.0, le=100.0, description="Share of the requests mirrored, at random."
    )
    header: str | None = Field(
        None,
        description=(
            "Only requests carrying this header are mirrored (then `percent` of them): a "
            "test client can opt its traffic in."
        ),
    )
    max_body: ByteSize = Field(
        64 * 1024,
        ge=0,
        description="Bodies up to this size are mirrored; larger requests are not (counted).",
    )
    max_in_flight: int = Field(
        100,
        ge=1,
        le=100_000,
        description=(
            "Mirrored requests under way at once per route (per worker); beyond it copies "
            "are dropped and counted, so a slow shadow cannot hold memory."
        ),
    )
    timeout: Duration = Field(
        5.0, gt=0, description="A mirrored request still unanswered after this is abandoned."
    )
