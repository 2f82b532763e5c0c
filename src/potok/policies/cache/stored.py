"""A stored response and how a request selects one of a URI's variants (RFC 9111 §4.1)."""

from __future__ import annotations

from potok.policies.cache.cache_control import Directives, field_names
from potok.policies.cache.freshness import Lifetime, current_age

Headers = list[tuple[bytes, bytes]]
VaryKey = tuple[tuple[bytes, bytes | None], ...]
"""The request's values of the fields a response varies on, by lower-case name."""

# Per-entry bookkeeping a store counts on top of header and body bytes.
ENTRY_OVERHEAD = 256


class StoredResponse:
    """One stored answer: immutable once stored (a 304 makes a new one)."""

    __slots__ = (
        "body",
        "directives",
        "etag",
        "headers",
        "identity",
        "initial_age",
        "last_modified",
        "lifetime",
        "reason",
        "response_time",
        "size",
        "status",
        "tags",
        "vary",
    )

    def __init__(
        self,
        *,
        status: int,
        reason: bytes,
        headers: Headers,
        body: bytes,
        directives: Directives,
        lifetime: Lifetime,
        initial_age: float,
        response_time: float,
        vary: VaryKey,
        identity: str | None,
        tags: frozenset[str],
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.directives = directives
        self.lifetime = lifetime.seconds
        self.initial_age = initial_age
        self.response_time = response_time
        self.vary = vary
        self.identity = identity
        self.tags = tags
        self.etag = _first(headers, b"etag")
        self.last_modified = _first(headers, b"last-modified")
        self.size = len(body) + sum(len(n) + len(v) + 4 for n, v in headers) + ENTRY_OVERHEAD

    def age(self, now: float) -> float:
        return current_age(self.initial_age, self.response_time, now)

    def ttl(self, now: float) -> float:
        """Seconds of freshness left (negative: stale for that long)."""
        return self.lifetime - self.age(now)

    @property
    def needs_validation(self) -> bool:
        """no-cache (any form: a qualified one is treated as unqualified, which §5.2.2.4
        allows): never reused without a successful revalidation."""
        return b"no-cache" in self.directives

    @property
    def has_validator(self) -> bool:
        return self.etag is not None or self.last_modified is not None


def vary_key(names: tuple[bytes, ...], request_headers: Headers) -> VaryKey:
    """The request's values of `names`, each normalised (lines joined with ", ", the
    whitespace around commas dropped): equal values select the same variant (§4.1)."""
    values: list[tuple[bytes, bytes | None]] = []
    for name in names:
        found: list[bytes] = []
        for header, value in request_headers:
            if len(header) == len(name) and header.lower() == name:
                found.extend(part.strip() for part in value.split(b","))
        values.append((name, b",".join(found) if found else None))
    return tuple(values)


def vary_names(value: bytes | None) -> tuple[bytes, ...] | None:
    """The field names of a response's Vary, sorted; None for `Vary: *` (never matches,
    so never stored)."""
    if value is None:
        return ()
    names = sorted({part.strip().lower() for part in value.split(b",") if part.strip()})
    if b"*" in names:
        return None
    return tuple(names)


def private_fields(directives: Directives) -> frozenset[bytes] | None:
    """The fields a qualified `private="..."` keeps out of a shared cache (§5.2.2.7)."""
    return field_names(directives, b"private")


def _first(headers: Headers, lower_name: bytes) -> bytes | None:
    size = len(lower_name)
    for name, value in headers:
        if len(name) == size and name.lower() == lower_name:
            return value
    return None
