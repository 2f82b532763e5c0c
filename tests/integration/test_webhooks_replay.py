"""Replay protection through the real gateway, on a SQLite and on a PostgreSQL outbox: a
delivery is a duplicate when its delivery id OR its signed content was already accepted
for the source. Each duplicate gets 200 {"status": "duplicate"}, is counted, and never
reaches the service a second time; a genuinely new delivery is accepted.

- same id, another validly signed body (a provider's second body, or a retry re-signed
  with a new timestamp) -> duplicate by id;
- a captured delivery replayed under a fresh, unsigned id -> duplicate by signed content;
- Stripe: extra v1= entries -> duplicate; a retry re-signed with a new t -> duplicate by
  the event id in the signed body.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.identity_db import postgres_database
from tests.support.net import request
from tests.support.webhooks import (
    GENERIC_RULES,
    PLAIN_SECRET,
    POTOK_SECRET,
    SW_SECRET,
    Receiver,
    generic_headers,
    github_headers,
    metric,
    standard_headers,
    stripe_headers,
    wait_until,
)

SOURCES = {
    "gh": {"preset": "github", "secrets": [PLAIN_SECRET]},
    "gn": {"preset": "generic_hmac", "secrets": [PLAIN_SECRET], "generic": GENERIC_RULES},
    "st": {"preset": "stripe", "secrets": [PLAIN_SECRET]},
    "sw": {"preset": "standard_webhooks", "secrets": [SW_SECRET]},
}
_counter = itertools.count()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def setup(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, Receiver]]:
    sqlite = f"sqlite:///{tmp_path_factory.mktemp('replay') / 'outbox.db'}"
    database = postgres_database() if request.param == "postgresql" else nullcontext(sqlite)
    with database as url:
        receiver = Receiver()
        config = {
            "services": {"svc": {"targets": [receiver.url]}},
            "webhooks": {
                "outbox": {"url": url},
                "delivery": {"signing_secret": POTOK_SECRET, "initial_backoff": "100ms"},
                "sources": {
                    name: {**spec, "service": "svc", "upstream_path": f"/in/{name}"}
                    for name, spec in SOURCES.items()
                },
            },
        }
        gateway = GatewayProcess(config)
        try:
            yield gateway, receiver
        finally:
            gateway.stop()
            receiver.stop()


def unique(name: str) -> str:
    return f"{name}-{next(_counter)}-{time.monotonic_ns()}"


def body_of(event_id: str, **fields: Any) -> bytes:
    extra = "".join(f', "{k}": "{v}"' for k, v in fields.items())
    return f'{{"id": "{event_id}", "object": "event"{extra}}}'.encode()


def post(gateway: GatewayProcess, name: str, body: bytes, headers: dict[str, str]) -> Any:
    return request(
        gateway.port,
        "POST",
        f"/api/v1/webhooks/{name}",
        {**headers, "Content-Type": "application/json"},
        body,
    )


def accept(
    setup: tuple[GatewayProcess, Receiver], name: str, body: bytes, headers: dict[str, str]
) -> str:
    gateway, receiver = setup
    response = post(gateway, name, body, headers)
    assert response.status == 200, response.body
    answer = response.json()
    assert answer["status"] == "accepted"
    wait_until(lambda: answer["id"] in receiver.ids())
    return str(answer["id"])


def assert_duplicates(
    setup: tuple[GatewayProcess, Receiver],
    name: str,
    first: bytes,
    replays: list[tuple[bytes, dict[str, str]]],
) -> None:
    gateway, receiver = setup
    before = metric(gateway.port, "webhooks_duplicates_total", source=name)
    for body, headers in replays:
        again = post(gateway, name, body, headers)
        assert again.status == 200, again.body
        assert again.json() == {"status": "duplicate"}
    after = metric(gateway.port, "webhooks_duplicates_total", source=name)
    assert after == before + len(replays)
    time.sleep(0.4)  # a forwarder that wrongly had one would have sent it by now
    assert sum(1 for d in receiver.deliveries if d.body == first) == 1
    for body, _ in replays:
        if body != first:
            assert not any(d.body == body for d in receiver.deliveries)


def test_github_same_id_other_body_and_fresh_id_replay(setup: tuple[GatewayProcess, Receiver]):
    first, delivery = body_of(unique("gh")), unique("d")
    accept(setup, "gh", first, github_headers(first, delivery=delivery))
    other = body_of(unique("gh"))
    assert_duplicates(setup, "gh", first, [
        (other, github_headers(other, delivery=delivery)),  # (a) same id, another body
        (first, github_headers(first, delivery=unique("d"))),  # (b) captured, fresh id
        (first, github_headers(first, delivery=delivery)),  # as it was
    ])  # fmt: skip
    fresh = body_of(unique("gh"))  # (e)
    accept(setup, "gh", fresh, github_headers(fresh, delivery=unique("d")))


def test_generic_same_id_resigned_and_fresh_id_replay(setup: tuple[GatewayProcess, Receiver]):
    first, delivery, ts = body_of(unique("gn")), unique("g"), int(time.time())
    accept(setup, "gn", first, generic_headers(first, delivery=delivery, ts=ts))
    other = body_of(unique("gn"))
    assert_duplicates(setup, "gn", first, [
        (other, generic_headers(other, delivery=delivery, ts=ts)),  # (a) another body
        (first, generic_headers(first, delivery=delivery, ts=ts - 7)),  # re-signed retry
        (first, generic_headers(first, delivery=unique("g"), ts=ts)),  # (b) fresh id
    ])  # fmt: skip
    fresh = body_of(unique("gn"))  # (e)
    accept(setup, "gn", fresh, generic_headers(fresh, delivery=unique("g"), ts=ts))


def test_stripe_padding_retry_and_same_event_id(setup: tuple[GatewayProcess, Receiver]):
    event, ts = unique("evt"), int(time.time())
    first = body_of(event, type="invoice.paid")
    headers = stripe_headers(first, ts=ts)
    accept(setup, "st", first, headers)
    sig = headers["Stripe-Signature"].split("v1=")[1].split(",")[0]
    other = body_of(event, type="invoice.paid", attempt="2")
    assert_duplicates(setup, "st", first, [
        (first, {"Stripe-Signature": headers["Stripe-Signature"] + ",v1=00,v1=" + sig}),  # (c)
        (first, stripe_headers(first, ts=ts - 30)),  # (d) a retry re-signed with a new t
        (other, stripe_headers(other, ts=ts)),  # (a) the same event id, another body
    ])  # fmt: skip
    # Without an event id in the body: the signed content is both keys.
    plain = b'{"object": "event", "n": "%s"}' % unique("st").encode()
    plain_headers = stripe_headers(plain, ts=ts)
    accept(setup, "st", plain, plain_headers)
    assert_duplicates(setup, "st", plain, [
        (plain, {"Stripe-Signature": plain_headers["Stripe-Signature"] + ",v1=ab"}),
    ])  # fmt: skip
    fresh = body_of(unique("evt"), type="invoice.paid")  # (e)
    accept(setup, "st", fresh, stripe_headers(fresh, ts=ts))


def test_standard_webhooks_same_id_other_body_and_retry(setup: tuple[GatewayProcess, Receiver]):
    gateway, receiver = setup
    first, message, ts = body_of(unique("sw")), unique("msg"), int(time.time())
    headers = standard_headers(first, delivery=message, ts=ts)
    accept(setup, "sw", first, headers)
    other = body_of(unique("sw"))
    assert_duplicates(setup, "sw", first, [
        (other, standard_headers(other, delivery=message, ts=ts)),  # (a) another body
        (first, standard_headers(first, delivery=message, ts=ts - 20)),  # re-signed retry
    ])  # fmt: skip
    # (b) webhook-id is signed: a captured delivery under a fresh id does not verify.
    refused = post(gateway, "sw", first, {**headers, "webhook-id": unique("msg")})
    assert refused.status == 401
    fresh = body_of(unique("sw"))  # (e)
    accept(setup, "sw", fresh, standard_headers(fresh, delivery=unique("msg"), ts=ts))
    assert sum(1 for d in receiver.deliveries if d.body == first) == 1
