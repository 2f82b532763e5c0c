"""Config of the `rate_limit` policy: one or several limits, where they are counted, and
what happens when the shared store is down."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from potok.config.base import ConfigModel
from potok.config.units import Duration
from potok.policies.rate_limit.keys import check_key

_LIMIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# A sliding window remembers one timestamp per admitted request, so its size is capped;
# the token bucket keeps two numbers whatever the limit.
MAX_SLIDING_LIMIT = 10_000


class LimitConfig(ConfigModel):
    """One limit: at most `limit` requests per `window` for each value of `key`."""

    limit: int = Field(100, gt=0, description="Requests admitted per window (the quota).")
    window: Duration = Field(60.0, description="The window, e.g. '1s', '60s', '1h'.")
    key: str = Field(
        "ip",
        description=(
            "What is counted separately: `ip` (client address; X-Forwarded-For only through "
            "server.trusted_proxies), `user` (identity.subject), `api_key` (the calling key), "
            "`route` (every client together) or `header:<Name>`. A request without a user, key "
            "or header is counted by its IP."
        ),
    )
    algorithm: Literal["sliding_window", "token_bucket"] = Field(
        "sliding_window",
        description=(
            "`sliding_window`: never more than `limit` in any `window` (exact; one timestamp "
            f"per admitted request, so limit <= {MAX_SLIDING_LIMIT}); `token_bucket`: a bucket of "
            "`burst` tokens refilled at limit/window per second."
        ),
    )
    burst: int | None = Field(
        None, gt=0, description="token_bucket only: the bucket size (default: `limit`)."
    )
    name: str | None = Field(
        None,
        description=(
            "The limit's name in RateLimit headers and metrics (default '<limit>-per-<window>')."
        ),
    )

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return check_key(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _LIMIT_NAME.match(value):
            raise ValueError("letters, digits, '_', '-' and '.', at most 64, starting alphanumeric")
        return value

    @model_validator(mode="after")
    def _algorithm_fields(self) -> LimitConfig:
        if self.algorithm == "sliding_window":
            if self.burst is not None:
                raise ValueError("burst applies to algorithm: token_bucket only")
            if self.limit > MAX_SLIDING_LIMIT:
                raise ValueError(
                    f"a sliding_window limit is at most {MAX_SLIDING_LIMIT}; "
                    "use algorithm: token_bucket for bigger quotas"
                )
        return self

    @property
    def label(self) -> str:
        """The name used in headers, metrics and store keys."""
        if self.name is not None:
            return self.name
        return f"{self.limit}-per-{self.window:g}s"


_SHORTHAND = ("limit", "window", "key", "algorithm", "burst", "name")


class RateLimitConfig(LimitConfig):
    """Give one limit inline (`limit`, `window`, `key`, ...) or several under `limits`.
    With none given: 100 requests per 60 s per client IP."""

    limits: tuple[LimitConfig, ...] = Field(
        (),
        description=(
            "Several limits (e.g. 10 per 1s and 1000 per 1h); a request is admitted only if "
            "every one admits it, and counts against all of them."
        ),
    )
    store: Literal["memory", "redis"] = Field(
        "memory",
        description=(
            "`memory`: counters in this process (one worker only); `redis`: counters in the "
            "top-level `redis:` store, exact across every worker and instance."
        ),
    )
    on_store_error: Literal["allow", "deny"] = Field(
        "allow",
        description=(
            "When the store is down or slower than redis.timeout: `allow` admits the request "
            "(fail open), `deny` answers 503 (fail closed)."
        ),
    )
    scope: Literal["route", "gateway"] = Field(
        "route",
        description=(
            "`route`: each route counts on its own; `gateway`: every route with this policy "
            "shares one budget per key (for a global block: N requests per client in total)."
        ),
    )
    headers: bool = Field(
        True,
        description="Send RateLimit-Policy and RateLimit on every answered request, not only 429.",
    )

    @model_validator(mode="after")
    def _one_form(self) -> RateLimitConfig:
        if self.limits:
            inline = [name for name in _SHORTHAND if name in self.model_fields_set]
            if inline:
                raise ValueError(
                    f"give the limit inline ({', '.join(inline)}) or under `limits`, not both"
                )
            labels = [item.label for item in self.limits]
            for label in labels:
                if labels.count(label) > 1:
                    raise ValueError(f"two limits are named {label!r}; give each a `name`")
        return self

    def effective_limits(self) -> tuple[LimitConfig, ...]:
        if self.limits:
            return self.limits
        return (
            LimitConfig(
                limit=self.limit,
                window=self.window,
                key=self.key,
                algorithm=self.algorithm,
                burst=self.burst,
                name=self.name,
            ),
        )
