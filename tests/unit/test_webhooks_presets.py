"""The presets against the providers' published examples, and the config rules.

Vectors:
- Standard Webhooks: the example in the specification (github.com/standard-webhooks/
  standard-webhooks, spec/standard-webhooks.md and the libraries' shared tests): secret
  whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, id msg_p5jXN8AQM9LWM0D4loKWxJek, timestamp
  1614265330, payload {"test": 2432232314} -> v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=
- GitHub: docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries,
  "Testing the webhook payload validation": secret "It's a Secret to Everybody", payload
  "Hello, World!" -> sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17
- Slack: api.slack.com/authentication/verifying-requests-from-slack, the worked example
  (signing secret 8f742231b10e8888abcd99yyyzzz85a5, timestamp 1531420618, the slash
  command body below) -> v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503
- Stripe publishes no vector; its scheme (docs.stripe.com/webhooks#verify-manually:
  t=...,v1=hex HMAC-SHA256 of "{t}.{body}", several v1 while rolling, v0 ignored) is
  exercised below and through the gateway in tests/integration/test_webhooks_presets.py.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pydantic import ValidationError

from potok.webhooks.backoff import RetrySchedule
from potok.webhooks.config import SourceConfig, WebhooksConfig
from potok.webhooks.presets import build_verifier
from potok.webhooks.verification import Rejected


def lookup(headers: dict[str, str]):  # type: ignore[no-untyped-def]
    lowered = {k.lower().encode(): v.encode() for k, v in headers.items()}
    return lowered.get


def source(preset: str, *secrets: str, **extra: object) -> SourceConfig:
    return SourceConfig(preset=preset, secrets=secrets, service="s", tolerance=300, **extra)


SW_STAMP = 1614265330


def test_standard_webhooks_spec_vector() -> None:
    verifier = build_verifier(source("standard_webhooks", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": str(SW_STAMP),
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    body = b'{"test": 2432232314}'
    assert verifier.verify(lookup(headers), body, SW_STAMP + 10).key == headers["webhook-id"]
    # Several signatures (rotation) and unknown versions: any valid v1 passes.
    headers["webhook-signature"] = "v1a,xxx v1,Zm9v v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    verifier.verify(lookup(headers), body, SW_STAMP)
    with pytest.raises(Rejected) as refused:
        verifier.verify(lookup(headers), body + b" ", SW_STAMP)
    assert refused.value.reason == "bad_signature"
    with pytest.raises(Rejected) as refused:
        verifier.verify(lookup(headers), body, SW_STAMP + 301)
    assert refused.value.reason == "timestamp_old"
    with pytest.raises(Rejected) as refused:
        verifier.verify(lookup(headers), body, SW_STAMP - 301)
    assert refused.value.reason == "timestamp_future"


def test_github_docs_vector() -> None:
    verifier = build_verifier(source("github", "It's a Secret to Everybody"))
    headers = {
        "X-Hub-Signature-256": (
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        ),
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-GitHub-Event": "issues",
    }
    verified = verifier.verify(lookup(headers), b"Hello, World!", 0)
    assert verified.key == headers["X-GitHub-Delivery"]
    # The delivery id is not signed: the digest of the body is the second key.
    assert verified.signature == "sig:" + hashlib.sha256(b"Hello, World!").hexdigest()[:40]
    assert verified.event_type == "issues"
    with pytest.raises(Rejected):
        verifier.verify(lookup(headers), b"Hello, World?", 0)


SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id="
    b"G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook"
    b"-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F39770"
    b"0885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d"
    b"2c447fce8b6703c"
)


def test_slack_docs_vector() -> None:
    verifier = build_verifier(source("slack", "8f742231b10e8888abcd99yyyzzz85a5"))
    headers = {
        "X-Slack-Request-Timestamp": "1531420618",
        "X-Slack-Signature": (
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        ),
    }
    verifier.verify(lookup(headers), SLACK_BODY, 1531420618 + 60)
    with pytest.raises(Rejected):
        verifier.verify(lookup(headers), SLACK_BODY + b"&x=1", 1531420618)


def test_stripe_scheme_with_rolled_secret() -> None:
    old, new = "whsec_stripe_old_secret_0001", "whsec_stripe_new_secret_0002"
    verifier = build_verifier(source("stripe", new))
    body = b'{"id": "evt_1", "object": "event"}'
    t = 1700000000

    def v1(secret: str) -> str:
        return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()

    header = {"Stripe-Signature": f"t={t},v1={v1(old)},v1={v1(new)},v0=6ffbb59b"}
    verifier.verify(lookup(header), body, t)
    with pytest.raises(Rejected) as refused:
        verifier.verify(lookup({"Stripe-Signature": f"t={t},v1={v1(old)}"}), body, t)
    assert refused.value.reason == "bad_signature"
    with pytest.raises(Rejected) as refused:
        verifier.verify(lookup({"Stripe-Signature": f"v1={v1(new)}"}), body, t)
    assert refused.value.reason == "malformed"


def test_max_bot_secret_header() -> None:
    verifier = build_verifier(source("max_bot", "max-subscription-secret-1", "max-secret-next-2"))
    body = b'{"update_type": "message_created", "timestamp": 1}'
    first = verifier.verify(lookup({"X-Max-Bot-Api-Secret": "max-secret-next-2"}), body, 0)
    assert first.key.startswith("body:")
    for presented in ("max-subscription-secret", "", "max-subscription-secret-1x"):
        with pytest.raises(Rejected):
            verifier.verify(lookup({"X-Max-Bot-Api-Secret": presented}), body, 0)


def test_a_source_without_a_secret_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(ValidationError) as error:
        WebhooksConfig.model_validate({"sources": {"max": {"preset": "max_bot", "service": "x"}}})
    assert "sources.max" in str(error.value) and "secrets" in str(error.value)
    with pytest.raises(ValidationError) as error:
        SourceConfig(preset="standard_webhooks", secrets=("not-whsec",), service="x")
    assert "secrets[0]" in str(error.value)
    with pytest.raises(ValidationError) as error:
        SourceConfig(preset="github", secrets=("short",), service="x")
    assert "at least 16 bytes" in str(error.value)


def test_backoff_grows_with_jitter_and_goes_dead() -> None:
    schedule = RetrySchedule(1.0, 600.0, 3600.0, 0, rand=lambda: 1.0)
    assert [schedule.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert schedule.delay(40) == 600.0
    low = RetrySchedule(1.0, 600.0, 3600.0, 0, rand=lambda: 0.0)
    assert low.delay(3) == 2.0  # half of the ceiling at the least
    assert schedule.next_at(5, received_at=0.0, now=3590.0) is None  # past max_age
    assert RetrySchedule(1.0, 600.0, 3600.0, 3).next_at(3, 0.0, 1.0) is None
