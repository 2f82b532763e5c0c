"""Config of the `cache` policy: an RFC 9111 shared cache of the route's upstream answers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from potok.config.base import ConfigModel
from potok.config.units import ByteSize, Duration

Method = Literal["GET", "HEAD"]


class CacheConfig(ConfigModel):
    """A shared cache (RFC 9111) of the route's answers to GET (HEAD is answered from a
    GET's entry), in a memory LRU bounded by bytes, per worker.

    Freshness comes from the upstream: `CDN-Cache-Control`/`Potok-Cache-Control` (RFC 9213)
    when present, else `Cache-Control` (`s-maxage`, `max-age`) and `Expires`. Answers marked
    `private` or `no-store`, and answers to requests with `Authorization` that do not say
    `public`, `s-maxage` or `must-revalidate`, are never stored (unless `per_identity`).
    Every answer carries `Cache-Status` (RFC 9211)."""

    store: Literal["memory", "redis"] = Field(
        "memory",
        description=(
            "memory: an LRU per worker (`max_bytes`). redis: shared by every worker and "
            "instance (the top-level `redis:` section); a Redis outage is a miss, never "
            "an error."
        ),
    )
    redis_max_body: ByteSize = Field(
        1024 * 1024, description="With store: redis, larger bodies are not stored."
    )
    redis_prefix: str = Field(
        "potok:cache:", min_length=1, description="With store: redis, the prefix of its keys."
    )
    redis_timeout: Duration = Field(
        0.25,
        description=(
            "With store: redis, how long a lookup may take before the request goes to "
            "the upstream as a miss."
        ),
    )
    max_bytes: ByteSize = Field(
        64 * 1024 * 1024,
        description="Bytes of headers and bodies the route's store keeps per worker (LRU).",
    )
    max_entry_bytes: ByteSize = Field(
        8 * 1024 * 1024,
        description=(
            "Largest body stored: a longer answer streams to the client and is not stored."
        ),
    )
    default_ttl: Duration | None = Field(
        None,
        description=(
            "Freshness of a storable answer that carries none (no max-age, s-maxage, "
            "Expires): off unless set. The upstream's headers always win."
        ),
    )
    heuristic: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description=(
            "Heuristic freshness (RFC 9111 §4.2.2) as a fraction of the time since "
            "Last-Modified (0.1 is usual); only for answers without explicit freshness "
            "whose status allows it. 0: off."
        ),
    )
    heuristic_max: Duration = Field(
        86400.0, description="Upper bound of a heuristic freshness lifetime."
    )
    sort_query: bool = Field(
        False,
        description="Sort query parameters in the key, so ?a=1&b=2 and ?b=2&a=1 share an entry.",
    )
    per_identity: bool = Field(
        False,
        description=(
            "Key entries by the authenticated caller too (its subject): answers to "
            "authorized requests, and `private` ones, are then stored and served only to "
            "the same caller. Needs an authentication policy on the route."
        ),
    )
    share_set_cookie: bool = Field(
        False,
        description=(
            "Serve a stored `Set-Cookie` to other clients. Off: the header is not stored "
            "(the client that caused the store still gets it)."
        ),
    )
    targets: tuple[str, ...] = Field(
        ("Potok-Cache-Control", "CDN-Cache-Control"),
        description=(
            "Targeted cache-control fields (RFC 9213) this cache obeys, most specific "
            "first: the first one present replaces Cache-Control and Expires."
        ),
    )
    tags: tuple[str, ...] = Field(
        (),
        description=(
            "Tags added to every stored answer, with `{param}` taken from the route's path "
            "parameters (e.g. `tasks:{org}`); upstream tags come from Cache-Tag and "
            "Surrogate-Key. Purged by tag from the admin API."
        ),
    )
    lock_timeout: Duration = Field(
        5.0,
        description=(
            "Single-flight: while one request fetches a missing key, others for it wait "
            "at most this long for its answer, then go to the upstream themselves."
        ),
    )
    stale_when_open: bool = Field(
        True,
        description=(
            "While the service's circuit breaker is open, answer with the last stored "
            "response even if stale (RFC 9111 §4.2.4: the origin is unreachable) — never "
            "one marked must-revalidate, proxy-revalidate, s-maxage or no-cache. It comes "
            "before the route's `fallback`."
        ),
    )
    x_cache: bool = Field(False, description="Also send `X-Cache: HIT|MISS|STALE`.")
    status_name: str = Field(
        "potok",
        pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$",
        description="This cache's name in Cache-Status (RFC 9211).",
    )

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not name or any(c in name for c in " :,\t"):
                raise ValueError(f"{name!r} is not a header field name")
        return value
