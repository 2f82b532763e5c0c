"""Slack (api.slack.com/authentication/verifying-requests-from-slack): `X-Slack-Signature:
v0=<hex HMAC-SHA256 of "v0:{X-Slack-Request-Timestamp}:{body}">`. Events API bodies carry
an `event_id` (signed, the same on Slack's retries, which are re-signed with a new
timestamp); commands and interactions carry none and are keyed by what was signed."""

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


class Slack:
    forwarded: tuple[bytes, ...] = (b"x-slack-retry-num", b"x-slack-retry-reason")

    def __init__(self, keys: tuple[bytes, ...], tolerance: float) -> None:
        self._keys = keys
        self._tolerance = tolerance

    def verify(self, header: HeaderLookup, body: bytes, now: float) -> Verified:
        stamp = header(b"x-slack-request-timestamp")
        check_timestamp(stamp, "X-Slack-Request-Timestamp", now, self._tolerance)
        raw = header(b"x-slack-signature")
        if raw is None:
            raise missing("X-Slack-Signature")
        if not raw.startswith(b"v0="):
            raise malformed("X-Slack-Signature", "expected v0=<hex>")
        try:
            presented = binascii.unhexlify(raw[3:])
        except binascii.Error:
            raise malformed("X-Slack-Signature", "expected v0=<hex>") from None
        base = b"v0:" + (stamp or b"") + b":"
        if not matches_any(
            (presented,), (hmac_digest(k, "sha256", base, body) for k in self._keys)
        ):
            raise bad_signature()
        signed = signed_content_key(base, body)
        return Verified(json_body_id(body, "event_id") or signed, signed)


def build(source: SourceConfig) -> Slack:
    return Slack(tuple(s.encode() for s in source.secrets), source.tolerance)
