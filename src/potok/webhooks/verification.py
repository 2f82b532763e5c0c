"""What every preset shares: the verdict types, HMAC over the raw bytes, constant-time
comparison against every configured secret, and the timestamp window.

Nothing here parses or re-encodes the body: signatures are computed over the bytes
exactly as they arrived.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import orjson

HeaderLookup = Callable[[bytes], bytes | None]
"""The first value of a request header by lower-case name (`Exchange.header`)."""

# Rejection reasons: the `reason` label of the metrics, the audit detail. A fixed set.
MISSING_HEADER = "missing_header"
MALFORMED = "malformed"
BAD_SIGNATURE = "bad_signature"
TIMESTAMP_OLD = "timestamp_old"
TIMESTAMP_FUTURE = "timestamp_future"
IP_DENIED = "ip_denied"
TOO_LARGE = "too_large"
REASONS = (
    MISSING_HEADER, MALFORMED, BAD_SIGNATURE, TIMESTAMP_OLD, TIMESTAMP_FUTURE, IP_DENIED,
    TOO_LARGE,
)  # fmt: skip


class Rejected(Exception):
    """A delivery refused: `reason` (one of REASONS), the HTTP status, and what to say."""

    def __init__(self, reason: str, status: int, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.status = status
        self.detail = detail


def missing(header: str) -> Rejected:
    return Rejected(MISSING_HEADER, 401, f"the {header} header is missing")


def malformed(header: str, why: str) -> Rejected:
    return Rejected(MALFORMED, 400, f"the {header} header is malformed: {why}")


def bad_signature() -> Rejected:
    # The same words whatever failed (which secret, which part): nothing for an attacker.
    return Rejected(BAD_SIGNATURE, 401, "the signature does not match")


@dataclass(frozen=True, slots=True)
class Verified:
    """An authentic delivery and its two replay keys. `key`: the provider's delivery id
    (else the signed-content digest); `signature`: the digest of what was signed
    (`signed_content_key`). A delivery whose id OR signed content was already accepted
    for the source is a duplicate: the id catches a provider's retry re-signed with a
    new timestamp, the digest catches a captured delivery replayed under a fresh,
    unsigned id. Plus the provider's event type where the scheme names one."""

    key: str
    signature: str
    event_type: str = "webhook"


class Verifier(Protocol):
    """One source's signature scheme, built once with its secrets."""

    @property
    def forwarded(self) -> tuple[bytes, ...]:
        """Lower-case request headers passed on to the service (event type, delivery id)."""
        ...

    def verify(self, header: HeaderLookup, body: bytes, now: float) -> Verified:
        """The verdict, or Rejected."""
        ...


def hmac_digest(key: bytes, algorithm: str, *parts: bytes) -> bytes:
    mac = hmac.new(key, digestmod=algorithm)
    for part in parts:
        mac.update(part)
    return mac.digest()


def matches_any(presented: Iterable[bytes], expected: Iterable[bytes]) -> bool:
    """Whether any presented signature equals any expected one, each comparison in
    constant time (hmac.compare_digest); the loops' length depends only on how many
    signatures were sent and secrets configured, never on their contents."""
    wanted = tuple(expected)
    found = False
    for candidate in presented:
        for digest in wanted:
            found |= hmac.compare_digest(candidate, digest)
    return found


def check_timestamp(raw: bytes | None, header: str, now: float, tolerance: float) -> int:
    """The Unix timestamp in `raw`, refused when missing, malformed or outside the window."""
    if raw is None:
        raise missing(header)
    if not raw.isdigit() or len(raw) > 12:
        raise malformed(header, "not a Unix timestamp in seconds")
    stamp = int(raw)
    if stamp < now - tolerance:
        raise Rejected(TIMESTAMP_OLD, 401, f"the {header} is older than the tolerance")
    if stamp > now + tolerance:
        raise Rejected(TIMESTAMP_FUTURE, 401, f"the {header} is in the future")
    return stamp


def signed_content_key(*signed: bytes) -> str:
    """The digest of exactly what the signature covers (timestamp, id, body as the scheme
    joins them). Canonical: the same whichever secret signed it and however many extra
    signatures the header carries, so a replay inside the window always has the same one."""
    digest = hashlib.sha256()
    for part in signed:
        digest.update(part)
    return "sig:" + digest.hexdigest()[:40]


def json_body_id(body: bytes, field: str) -> str | None:
    """A delivery id from a (signed) JSON object body, e.g. Stripe's event `id`; None when
    the body is not a JSON object or the field is not a sane id. Only bodies that start
    with `{` are parsed (form-encoded Slack commands, for one, are not)."""
    if not body.startswith(b"{"):
        return None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    value = document.get(field) if isinstance(document, dict) else None
    if not isinstance(value, str) or not 0 < len(value) <= 200:
        return None
    return value if value.isascii() and value.isprintable() else None


def delivery_id(raw: bytes | None, header: str) -> str:
    """A provider's delivery id, checked to be short printable text."""
    if raw is None:
        raise missing(header)
    if not 0 < len(raw) <= 200 or not raw.isascii() or not raw.decode().isprintable():
        raise malformed(header, "a delivery id is 1-200 printable ASCII characters")
    return raw.decode()
