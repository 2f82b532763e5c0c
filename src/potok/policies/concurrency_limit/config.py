"""Config of the `concurrency_limit` policy: requests of one key in flight at once."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from potok.config.base import ConfigModel
from potok.policies.rate_limit.keys import check_key


class ConcurrencyLimitConfig(ConfigModel):
    """At most `max` requests of one key (e.g. one API key) in flight at once, counted in each
    worker process: with N workers a key may have up to N x max in flight."""

    max: int = Field(gt=0, le=100_000, description="Requests of one key in flight at once.")
    key: str = Field(
        "ip",
        description="What is counted separately: ip, user, api_key, route or header:<Name> "
        "(as for rate_limit).",
    )
    status: Literal[429, 503] = Field(
        429, description="Status for a request over the limit (with Retry-After: 1)."
    )

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return check_key(value)
