"""Any provider that puts an HMAC (SHA-256 or SHA-512, hex or base64) of the body, or of
"{timestamp}.{body}", in one header (`generic:` block of the source)."""

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
    malformed,
    matches_any,
    missing,
    signed_content_key,
)

if TYPE_CHECKING:
    from potok.webhooks.config import GenericHmacConfig, SourceConfig


class GenericHmac:
    def __init__(self, rules: GenericHmacConfig, keys: tuple[bytes, ...], tolerance: float) -> None:
        self._keys = keys
        self._tolerance = tolerance
        self._name = rules.header
        self._header = rules.header.lower().encode()
        self._prefix = rules.prefix.encode()
        self._algorithm = rules.algorithm
        self._base64 = rules.encoding == "base64"
        self._stamp_name = rules.timestamp_header or ""
        self._stamp = (
            rules.timestamp_header.lower().encode()
            if rules.timestamp_header and rules.signed == "timestamp.body"
            else None
        )
        self._id_name = rules.id_header or ""
        self._id = rules.id_header.lower().encode() if rules.id_header else None
        self.forwarded: tuple[bytes, ...] = (self._id,) if self._id else ()

    def verify(self, header: HeaderLookup, body: bytes, now: float) -> Verified:
        raw = header(self._header)
        if raw is None:
            raise missing(self._name)
        if not raw.startswith(self._prefix):
            raise malformed(self._name, "unexpected prefix")
        presented = self._decode(raw[len(self._prefix) :].strip())
        parts: tuple[bytes, ...] = (body,)
        if self._stamp is not None:
            stamp = header(self._stamp)
            check_timestamp(stamp, self._stamp_name, now, self._tolerance)
            parts = (stamp or b"", b".", body)
        expected = (hmac_digest(k, self._algorithm, *parts) for k in self._keys)
        if not matches_any((presented,), expected):
            raise bad_signature()
        signed = signed_content_key(*parts)
        if self._id is None:
            return Verified(signed, signed)
        # The id header is not signed: it alone would let a captured delivery pass again
        # under a fresh id, which the signed-content key catches.
        return Verified(delivery_id(header(self._id), self._id_name), signed)

    def _decode(self, text: bytes) -> bytes:
        try:
            if self._base64:
                return base64.b64decode(text, validate=True)
            return binascii.unhexlify(text)
        except (binascii.Error, ValueError):
            raise malformed(self._name, "not a digest in the configured encoding") from None


def build(source: SourceConfig) -> GenericHmac:
    assert source.generic is not None  # the config requires it for this preset
    return GenericHmac(source.generic, tuple(s.encode() for s in source.secrets), source.tolerance)
