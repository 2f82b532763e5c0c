"""GitHub (docs.github.com, "Validating webhook deliveries"): `X-Hub-Signature-256:
sha256=<hex HMAC-SHA256 of the body>`; the delivery id is `X-GitHub-Delivery`. GitHub
signs no timestamp: replays are caught for as long as `outbox.retention` keeps them, by
the delivery id and by the body's digest (the delivery id is not signed, so a captured
delivery under a fresh id is caught by the digest)."""

from __future__ import annotations

import binascii
from typing import TYPE_CHECKING

from potok.webhooks.verification import (
    HeaderLookup,
    Verified,
    bad_signature,
    delivery_id,
    hmac_digest,
    malformed,
    matches_any,
    missing,
    signed_content_key,
)

if TYPE_CHECKING:
    from potok.webhooks.config import SourceConfig


class GitHub:
    forwarded: tuple[bytes, ...] = (b"x-github-event", b"x-github-delivery", b"x-github-hook-id")

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        self._keys = keys

    def verify(self, header: HeaderLookup, body: bytes, now: float) -> Verified:
        raw = header(b"x-hub-signature-256")
        if raw is None:
            raise missing("X-Hub-Signature-256")
        if not raw.startswith(b"sha256="):
            raise malformed("X-Hub-Signature-256", "expected sha256=<hex>")
        try:
            presented = binascii.unhexlify(raw[7:])
        except binascii.Error:
            raise malformed("X-Hub-Signature-256", "expected sha256=<hex>") from None
        delivery = delivery_id(header(b"x-github-delivery"), "X-GitHub-Delivery")
        if not matches_any((presented,), (hmac_digest(k, "sha256", body) for k in self._keys)):
            raise bad_signature()
        event = header(b"x-github-event")
        return Verified(delivery, signed_content_key(body), _event_type(event))


def _event_type(raw: bytes | None) -> str:
    if raw is None or not raw.isascii() or not 0 < len(raw) <= 64:
        return "webhook"
    return raw.decode()


def build(source: SourceConfig) -> GitHub:
    return GitHub(tuple(s.encode() for s in source.secrets))
