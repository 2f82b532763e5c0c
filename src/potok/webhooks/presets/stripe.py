"""Stripe (docs.stripe.com/webhooks, "Verify signatures manually"): `Stripe-Signature:
t=<unix>,v1=<hex HMAC-SHA256 of "{t}.{body}">[,v1=...][,v0=...]`; several v1 entries
while the endpoint secret rolls; v0 (test-mode legacy) is ignored. The replay key is the
event's `id` (`evt_…`) from the signed body, the same on every retry although each retry
is signed with a new `t`."""

from __future__ import annotations

import binascii
from typing import TYPE_CHECKING

from potok.webhooks.verification import (
    HeaderLookup,
    Verified,
    bad_signature,
    check_timestamp,
    hmac_digest,
    json_body_id,
    malformed,
    matches_any,
    missing,
    signed_content_key,
)

if TYPE_CHECKING:
    from potok.webhooks.config import SourceConfig

HEADER = "Stripe-Signature"


class Stripe:
    forwarded: tuple[bytes, ...] = (b"stripe-signature",)

    def __init__(self, keys: tuple[bytes, ...], tolerance: float) -> None:
        self._keys = keys
        self._tolerance = tolerance

    def verify(self, header: HeaderLookup, body: bytes, now: float) -> Verified:
        raw = header(b"stripe-signature")
        if raw is None:
            raise missing(HEADER)
        stamp: bytes | None = None
        presented: list[bytes] = []
        for item in raw.split(b","):
            name, _, value = item.strip().partition(b"=")
            if name == b"t":
                stamp = value
            elif name == b"v1":
                try:
                    presented.append(binascii.unhexlify(value))
                except binascii.Error:
                    continue
        if stamp is None:
            raise malformed(HEADER, "no t= timestamp")
        check_timestamp(stamp, f"{HEADER} timestamp", now, self._tolerance)
        if not presented:
            raise malformed(HEADER, "no v1= signature")
        expected = (hmac_digest(k, "sha256", stamp, b".", body) for k in self._keys)
        if not matches_any(presented, expected):
            raise bad_signature()
        # The signature key is a digest of what was signed, not of the header: extra or
        # repeated v1= entries would otherwise make a replay of a captured delivery look new.
        signed = signed_content_key(stamp, b".", body)
        return Verified(json_body_id(body, "id") or signed, signed)


def build(source: SourceConfig) -> Stripe:
    return Stripe(tuple(s.encode() for s in source.secrets), source.tolerance)
