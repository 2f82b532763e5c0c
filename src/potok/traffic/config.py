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


class AggregateCall(ConfigModel):
    """One upstream call of an aggregated route (made in parallel with the others)."""

    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description=(
            "The call's name in X-Potok-Partial, metrics and logs; defaults to `key`, else "
            "the service name."
        ),
    )
    service: str = Field(description="The service (under `services`) the call goes to.")
    path: str = Field(
        min_length=1,
        description=(
            "The upstream path, a template like `/users/{id}`: each `{name}` takes the "
            "route's path parameter of that name. The client's query string is appended."
        ),
    )
    key: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description=(
            "The answer's member holding this call's JSON; none: the call's JSON object is "
            "merged into the answer's top level (a later call wins on a name both give)."
        ),
    )
    timeout: Duration = Field(5.0, gt=0, description="The call's whole time, its retries included.")
    required: bool = Field(
        True,
        description=(
            "A required call that fails fails the answer (502, 503 or 504 problem+json); "
            "an optional one leaves its part out and names it in X-Potok-Partial."
        ),
    )
    max_body: ByteSize = Field(
        1024 * 1024,
        ge=0,
        description="The largest answer body taken from the call; a larger one fails it.",
    )

    @property
    def label(self) -> str:
        return self.name or self.key or self.service


class AggregateConfig(ConfigModel):
    """One JSON answer composed of several upstream calls made in parallel.

    Back end for front end: the calls' JSON answers under keys, or merged at the top.
    """

    calls: tuple[AggregateCall, ...] = Field(
        min_length=1, max_length=32, description="The calls, in the order they merge."
    )

    @model_validator(mode="after")
    def _distinct(self) -> AggregateConfig:
        labels = [call.label for call in self.calls]
        for index, label in enumerate(labels):
            if label in labels[:index]:
                raise ValueError(
                    f"calls[{index}]: a second call named {label!r} (give `name` to tell "
                    "them apart)"
                )
        keys = [call.key for call in self.calls if call.key is not None]
        if len(set(keys)) != len(keys):
            raise ValueError("calls: two calls have the same `key`")
        return self
