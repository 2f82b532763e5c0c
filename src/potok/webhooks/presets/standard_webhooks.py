"""Standard Webhooks (https://www.standardwebhooks.com, spec/standard-webhooks.md):
`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">` (space-separated during key rotation); `whsec_<base64 key>`."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

from potok.webhooks.verification import (
    HeaderLookup,
    Verified,
    bad_signature,
    check_timestamp,
    delivery_id,
    hmac_digest,
    matches_any,
    missing,
    signed_content_key,
)

if TYPE_CHECKING:
    from potok.webhooks.config import SourceConfig


def secret_key(secret: str) -> bytes:
    """The HMAC key of a whsec_ secret (validated by the config)."""
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64>` signature of one message (Potok's own forwarding uses it too)."""
    digest = hmac_digest(key, "sha256", f"{message_id}.{timestamp}.".encode(), body)
    return "v1," + base64.b64encode(digest).decode()


class StandardWebhooks:
    forwarded: tuple[
        bytes, ...
    ] = ()  # its webhook-* headers would clash with Potok's own signature

    def __init__(self, keys: tuple[bytes, ...], tolerance: float) -> None:
        self._keys = keys
        self._tolerance = tolerance

    def verify(self, header: HeaderLookup, body: bytes, now: float) -> Verified:
        message_id = delivery_id(header(b"webhook-id"), "webhook-id")
        raw_stamp = header(b"webhook-timestamp")
        check_timestamp(raw_stamp, "webhook-timestamp", now, self._tolerance)
        raw_signatures = header(b"webhook-signature")
        if raw_signatures is None:
            raise missing("webhook-signature")
        presented = []
        for item in raw_signatures.split():
            version, _, encoded = item.partition(b",")
            if version != b"v1":
                continue  # v1a (asymmetric) and future versions: not ours to check
            try:
                presented.append(base64.b64decode(encoded, validate=True))
            except binascii.Error:
                continue
        prefix = message_id.encode() + b"." + (raw_stamp or b"") + b"."
        expected = (hmac_digest(key, "sha256", prefix, body) for key in self._keys)
        if not matches_any(presented, expected):
            raise bad_signature()
        # webhook-id is signed, so it is the key; the same id re-sent with a new timestamp
        # (a retry) or another body is a duplicate.
        return Verified(message_id, signed_content_key(prefix, body))


def build(source: SourceConfig) -> StandardWebhooks:
    return StandardWebhooks(tuple(secret_key(s) for s in source.secrets), source.tolerance)
