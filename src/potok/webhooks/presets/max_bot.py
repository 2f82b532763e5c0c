"""MAX messenger bots (dev.max.ru, "Subscriptions", POST /subscriptions `secret`): every
update carries `X-Max-Bot-Api-Secret` equal to the secret given when subscribing. The
body is not signed and there is no delivery id, so both replay keys are a digest of the
body (each update carries its own timestamp and ids, so two genuine updates never share
one)."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from potok.webhooks.verification import HeaderLookup, Verified, bad_signature, matches_any, missing

if TYPE_CHECKING:
    from potok.webhooks.config import SourceConfig


class MaxBot:
    forwarded: tuple[bytes, ...] = ()

    def __init__(self, secrets: tuple[bytes, ...]) -> None:
        # Compared as digests: equal length whatever was sent, so compare_digest's time
        # says nothing about the secret's length either.
        self._digests = tuple(hashlib.sha256(s).digest() for s in secrets)

    def verify(self, header: HeaderLookup, body: bytes, now: float) -> Verified:
        raw = header(b"x-max-bot-api-secret")
        if raw is None:
            raise missing("X-Max-Bot-Api-Secret")
        if not matches_any((hashlib.sha256(raw).digest(),), self._digests):
            raise bad_signature()
        key = "body:" + hashlib.sha256(body).hexdigest()[:40]
        return Verified(key, key, "update")


def build(source: SourceConfig) -> MaxBot:
    return MaxBot(tuple(s.encode() for s in source.secrets))
