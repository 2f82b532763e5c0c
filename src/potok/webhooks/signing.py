"""Potok's own signature on forwarded deliveries, in the Standard Webhooks format, so a
service verifies it with any Standard Webhooks library and its `delivery.signing_secret`:
`webhook-id` (the delivery id, also the Idempotency-Key), `webhook-timestamp` (when this
attempt was sent) and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{ts}.{body}">`."""

from __future__ import annotations

from potok.webhooks.presets.standard_webhooks import secret_key, sign


class DeliverySigner:
    def __init__(self, secret: str) -> None:
        self._key = secret_key(secret)

    def headers(self, delivery_id: str, body: bytes, now: float) -> list[tuple[bytes, bytes]]:
        stamp = int(now)
        signature = sign(self._key, delivery_id, stamp, body)
        return [
            (b"webhook-id", delivery_id.encode()),
            (b"webhook-timestamp", str(stamp).encode()),
            (b"webhook-signature", signature.encode()),
        ]
