"""Each preset's two replay keys: `key` (the provider's delivery id where it has one) and
`signature` (a digest of exactly what was signed). The outbox refuses a delivery that
matches a stored one on either, so these properties are what replay protection rests on:
the id stays the same when a provider re-signs a retry, the signature key stays the same
whatever id header or extra signatures a replay carries, and which secret signed."""

from __future__ import annotations

import base64
import hashlib
import hmac

from potok.webhooks.config import SourceConfig
from potok.webhooks.presets import build_verifier
from potok.webhooks.verification import Verified, json_body_id

SECRET = "s3cr3t-for-the-unit-tests-0123456"
NEXT = "the-next-secret-for-unit-tests-99"
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = 1_700_000_000
GENERIC = {
    "header": "X-Signature",
    "algorithm": "sha256",
    "encoding": "hex",
    "signed": "timestamp.body",
    "timestamp_header": "X-Timestamp",
    "id_header": "X-Delivery",
}


def source(preset: str, *secrets: str, **extra: object) -> SourceConfig:
    return SourceConfig(preset=preset, secrets=secrets, service="s", tolerance=300, **extra)


def verify(preset_source: SourceConfig, headers: dict[str, str], body: bytes) -> Verified:
    lowered = {k.lower().encode(): v.encode() for k, v in headers.items()}
    return build_verifier(preset_source).verify(lowered.get, body, NOW)


def mac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def github(body: bytes, delivery: str, secret: str = SECRET) -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + mac(secret, body), "X-GitHub-Delivery": delivery}


def test_github_keys_are_the_delivery_id_and_the_body_digest() -> None:
    gh = source("github", SECRET, NEXT)
    first = verify(gh, github(b'{"a": 1}', "d-1"), b'{"a": 1}')
    assert first.key == "d-1"
    # Captured and replayed under a fresh id: a new key, the same signature key.
    fresh = verify(gh, github(b'{"a": 1}', "d-2"), b'{"a": 1}')
    assert fresh.key == "d-2" and fresh.signature == first.signature
    # The same id with another body: the same key.
    other = verify(gh, github(b'{"a": 2}', "d-1"), b'{"a": 2}')
    assert other.key == "d-1" and other.signature != first.signature
    # Whichever secret of the rotation signed it: the same signature key.
    rotated = verify(gh, github(b'{"a": 1}', "d-3", NEXT), b'{"a": 1}')
    assert rotated.signature == first.signature


def stripe(body: bytes, t: int, extra: str = "", secret: str = SECRET) -> dict[str, str]:
    return {"Stripe-Signature": f"t={t},v1={mac(secret, f'{t}.'.encode() + body)}{extra}"}


def test_stripe_keys_are_the_event_id_and_the_signed_content_digest() -> None:
    st = source("stripe", SECRET, NEXT)
    body = b'{"id": "evt_1NXa", "object": "event", "type": "invoice.paid"}'
    first = verify(st, stripe(body, NOW), body)
    assert first.key == "evt_1NXa"
    assert first.signature == "sig:" + hashlib.sha256(f"{NOW}.".encode() + body).hexdigest()[:40]
    # A retry re-signed with a new t: the same event id, another signature key.
    retry = verify(st, stripe(body, NOW + 60), body)
    assert retry.key == first.key and retry.signature != first.signature
    # Padding with more entries, or another secret of the rotation: the same keys.
    padded = verify(st, stripe(body, NOW, ",v1=00,v0=ff,v1=" + "ab" * 32), body)
    rotated = verify(st, stripe(body, NOW, secret=NEXT), body)
    assert padded == rotated == first


def test_stripe_without_an_event_id_is_keyed_by_the_signed_content() -> None:
    st = source("stripe", SECRET)
    for body in (b'{"object": "event"}', b"[1, 2]", b"not json", b'{"id": 17}', b'{"id": ""}'):
        verified = verify(st, stripe(body, NOW), body)
        assert verified.key == verified.signature and verified.key.startswith("sig:")


def test_generic_keys_are_the_id_header_and_the_signed_content_digest() -> None:
    with_id = source("generic_hmac", SECRET, generic=GENERIC)
    body = b'{"n": 1}'

    def headers(delivery: str, ts: int = NOW) -> dict[str, str]:
        signature = mac(SECRET, f"{ts}.".encode() + body)
        return {"X-Signature": signature, "X-Timestamp": str(ts), "X-Delivery": delivery}

    first = verify(with_id, headers("g-1"), body)
    assert first.key == "g-1"
    fresh = verify(with_id, headers("g-2"), body)
    assert fresh.key == "g-2" and fresh.signature == first.signature
    resigned = verify(with_id, headers("g-1", NOW + 5), body)
    assert resigned.key == "g-1" and resigned.signature != first.signature
    without_id = source("generic_hmac", SECRET, generic={**GENERIC, "id_header": None})
    plain = verify(without_id, headers("ignored"), body)
    assert plain.key == plain.signature == first.signature


def test_standard_webhooks_keys_are_the_signed_id_and_the_signed_content_digest() -> None:
    sw = source("standard_webhooks", SW_SECRET)
    key = base64.b64decode(SW_SECRET.removeprefix("whsec_"))
    body = b'{"n": 1}'

    def headers(message_id: str, ts: int) -> dict[str, str]:
        signed = f"{message_id}.{ts}.".encode() + body
        signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": f"v1,{signature} v1,AAAA",
        }

    first = verify(sw, headers("msg_1", NOW), body)
    retry = verify(sw, headers("msg_1", NOW + 30), body)
    assert first.key == retry.key == "msg_1" and first.signature != retry.signature


def test_slack_keys_are_the_event_id_where_there_is_one() -> None:
    sl = source("slack", SECRET)

    def headers(body: bytes, ts: int) -> dict[str, str]:
        return {
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": "v0=" + mac(SECRET, f"v0:{ts}:".encode() + body),
        }

    event = b'{"type": "event_callback", "event_id": "Ev08MFMKH6", "event": {}}'
    first = verify(sl, headers(event, NOW), event)
    retry = verify(sl, headers(event, NOW + 60), event)  # Slack re-signs its retries
    assert first.key == retry.key == "Ev08MFMKH6" and first.signature != retry.signature
    command = b"command=%2Fdo&text=x"
    verified = verify(sl, headers(command, NOW), command)
    assert verified.key == verified.signature


def test_max_bot_keys_are_the_body_digest() -> None:
    mx = source("max_bot", SECRET)
    verified = verify(mx, {"X-Max-Bot-Api-Secret": SECRET}, b'{"timestamp": 1}')
    assert verified.key == verified.signature and verified.key.startswith("body:")


def test_json_body_id_takes_only_sane_ids() -> None:
    assert json_body_id(b'{"id": "evt_1"}', "id") == "evt_1"
    assert json_body_id(b' {"id": "evt_1"}', "id") is None  # only bodies starting with {
    assert json_body_id(b'{"id": "a\\nb"}', "id") is None
    assert json_body_id(b'{"id": "' + b"x" * 201 + b'"}', "id") is None
    assert json_body_id(b'{"id": "\xc3\xa9"}', "id") is None
    assert json_body_id(b"{broken", "id") is None
