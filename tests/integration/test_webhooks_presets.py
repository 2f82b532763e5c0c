"""Every preset through the real gateway: a valid delivery is stored and forwarded (with
Potok's own signature); a tampered body, a wrong secret, an old or future timestamp, a
missing header and a replay are each refused with their status, counted, and never reach
the service. Secrets rotate (two accepted at once)."""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.net import request
from tests.support.webhooks import (
    GENERIC_RULES,
    OTHER_SECRET,
    PLAIN_SECRET,
    POTOK_SECRET,
    SW_SECRET,
    Receiver,
    generic_headers,
    github_headers,
    max_headers,
    metric,
    slack_headers,
    standard_headers,
    stripe_headers,
    verify_potok,
    wait_until,
)

SW_NEXT = "whsec_" + base64.b64encode(b"the-next-standard-webhooks-key!!").decode()
Signer = Callable[..., dict[str, str]]

# name -> (preset, signer, secrets, signs a timestamp, extra config)
PRESETS: dict[str, tuple[str, Signer, tuple[str, str], bool, dict[str, Any]]] = {
    "sw": ("standard_webhooks", standard_headers, (SW_SECRET, SW_NEXT), True, {}),
    "gh": ("github", github_headers, (PLAIN_SECRET, OTHER_SECRET), False, {}),
    "st": ("stripe", stripe_headers, (PLAIN_SECRET, OTHER_SECRET), True, {}),
    "sl": ("slack", slack_headers, (PLAIN_SECRET, OTHER_SECRET), True, {}),
    "max": ("max_bot", max_headers, (PLAIN_SECRET, OTHER_SECRET), False,
            {"path": "/api/v1/bot/webhook"}),
    "gn": ("generic_hmac", generic_headers, (PLAIN_SECRET, OTHER_SECRET), True,
           {"generic": GENERIC_RULES}),
}  # fmt: skip
WRONG = {"sw": "whsec_" + base64.b64encode(b"wrong-key-wrong-key-wrong-key!!").decode()}
_counter = itertools.count()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Receiver]]:
    receiver = Receiver()
    folder: Path = tmp_path_factory.mktemp("webhooks")
    sources = {
        name: {"preset": preset, "secrets": list(secrets), "service": "svc",
               "upstream_path": f"/in/{name}", **extra}
        for name, (preset, _, secrets, _, extra) in PRESETS.items()
    }  # fmt: skip
    config = {
        "services": {"svc": {"targets": [receiver.url]}},
        "webhooks": {
            "outbox": {"url": f"sqlite:///{folder / 'outbox.db'}"},
            "delivery": {"signing_secret": POTOK_SECRET, "initial_backoff": "100ms"},
            "sources": sources,
        },
    }
    gateway = GatewayProcess(config)
    yield gateway, receiver
    gateway.stop()
    receiver.stop()


def unique_body(name: str) -> bytes:
    return b'{"event": "%s", "n": %d}' % (name.encode(), next(_counter))


def post(gateway: GatewayProcess, name: str, body: bytes, headers: dict[str, str]) -> Any:
    path = "/api/v1/bot/webhook" if name == "max" else f"/api/v1/webhooks/{name}"
    return request(
        gateway.port, "POST", path, {**headers, "Content-Type": "application/json"}, body
    )


def delivery_id() -> str:
    return f"d-{next(_counter)}-{time.monotonic_ns()}"


@pytest.mark.parametrize("name", list(PRESETS))
def test_valid_delivery_is_stored_then_forwarded_signed(
    setup: tuple[GatewayProcess, Receiver], name: str
) -> None:
    gateway, receiver = setup
    _, signer, secrets, _, _ = PRESETS[name]
    for secret in secrets:  # both secrets of the rotation
        body = unique_body(name)
        response = post(gateway, name, body, signer(body, secret=secret, delivery=delivery_id()))
        assert response.status == 200, response.body
        answer = response.json()
        assert isinstance(answer, dict) and answer["status"] == "accepted"
        wait_until(lambda: answer["id"] in receiver.ids())  # noqa: B023
        got = next(d for d in receiver.deliveries if d.id == answer["id"])
        assert got.body == body and got.source == name
        assert got.headers["Idempotency-Key"] == got.headers["webhook-id"] == answer["id"]
        assert got.headers["Content-Type"] == "application/json"
        assert verify_potok(got.headers, body)


def refusals(name: str) -> list[tuple[str, int, str, Callable[[], tuple[bytes, dict[str, str]]]]]:
    """(case, status, reason, make (body, headers)) for one preset. GitHub and MAX sign no
    timestamp: their replays are caught by the signature (GitHub) or the body (MAX)."""
    _, signer, secrets, timed, _ = PRESETS[name]
    wrong = WRONG.get(name, "not-the-secret-at-all-000000000")

    def tampered() -> tuple[bytes, dict[str, str]]:
        body = unique_body(name)
        return body + b" ", signer(body, secret=secrets[0], delivery=delivery_id())

    def wrong_secret() -> tuple[bytes, dict[str, str]]:
        body = unique_body(name)
        return body, signer(body, secret=wrong, delivery=delivery_id())

    def stamped(offset: int) -> Callable[[], tuple[bytes, dict[str, str]]]:
        def make() -> tuple[bytes, dict[str, str]]:
            body = unique_body(name)
            ts = int(time.time()) + offset
            return body, signer(body, secret=secrets[0], delivery=delivery_id(), ts=ts)

        return make

    def missing() -> tuple[bytes, dict[str, str]]:
        body = unique_body(name)
        headers = signer(body, secret=secrets[0], delivery=delivery_id())
        signature = next(k for k in headers if "sig" in k.lower() or "secret" in k.lower())
        del headers[signature]
        return body, headers

    cases = [
        ("wrong secret", 401, "bad_signature", wrong_secret),
        ("missing header", 401, "missing_header", missing),
    ]
    if name != "max":
        # MAX sends its secret in a header and signs nothing: a changed body cannot be
        # told from another update (TLS is what protects it in transit).
        cases.append(("tampered", 401, "bad_signature", tampered))
    if timed:
        cases += [
            ("old timestamp", 401, "timestamp_old", stamped(-301)),
            # Not +301: a second that ticks between signing and the gateway's check
            # (a loaded machine) leaves it exactly at the 300 s tolerance, accepted.
            ("future timestamp", 401, "timestamp_future", stamped(+310)),
        ]
    return cases


CASES = [(name, case) for name in PRESETS for case in refusals(name)]


@pytest.mark.parametrize(("name", "case"), CASES, ids=[f"{name}-{case[0]}" for name, case in CASES])
def test_refused_counted_and_never_forwarded(
    setup: tuple[GatewayProcess, Receiver], name: str, case: Any
) -> None:
    gateway, receiver = setup
    _, status, reason, make = case
    before = metric(gateway.port, "webhooks_rejected_total", source=name, reason=reason)
    attempts = receiver.attempts
    body, headers = make()
    response = post(gateway, name, body, headers)
    assert response.status == status, response.body
    assert response.header("Content-Type") == "application/problem+json"
    assert response.json()["reason"] == reason  # type: ignore[index]
    after = metric(gateway.port, "webhooks_rejected_total", source=name, reason=reason)
    assert after == before + 1
    time.sleep(0.3)  # a forwarder that wrongly had it would have sent it by now
    assert receiver.attempts == attempts


@pytest.mark.parametrize("name", list(PRESETS))
def test_replay_is_200_once_and_forwarded_once(
    setup: tuple[GatewayProcess, Receiver], name: str
) -> None:
    gateway, receiver = setup
    _, signer, secrets, _, _ = PRESETS[name]
    body = unique_body(name)
    headers = signer(body, secret=secrets[0], delivery=delivery_id())
    first = post(gateway, name, body, headers)
    assert first.status == 200
    accepted = first.json()["id"]  # type: ignore[index]
    before = metric(gateway.port, "webhooks_duplicates_total", source=name)
    for _ in range(3):
        again = post(gateway, name, body, headers)
        assert again.status == 200 and again.json() == {"status": "duplicate"}
    assert metric(gateway.port, "webhooks_duplicates_total", source=name) == before + 3
    wait_until(lambda: accepted in receiver.ids())
    time.sleep(0.3)
    assert receiver.ids().count(accepted) == 1
    assert sum(1 for d in receiver.deliveries if d.body == body) == 1


def test_unknown_source_and_wrong_method(setup: tuple[GatewayProcess, Receiver]) -> None:
    gateway, _ = setup
    assert request(gateway.port, "POST", "/api/v1/webhooks/nope", {}, b"{}").status == 404
    response = request(gateway.port, "GET", "/api/v1/webhooks/sw")
    assert response.status == 405 and response.header("Allow") == "POST"


def test_body_over_the_limit_is_refused_before_it_is_read(
    setup: tuple[GatewayProcess, Receiver],
) -> None:
    gateway, receiver = setup
    attempts = receiver.attempts
    body = b"x" * (1024 * 1024 + 1)
    headers = standard_headers(body, delivery=delivery_id())
    response = post(gateway, "sw", body, headers)
    assert response.status == 413
    assert metric(gateway.port, "webhooks_rejected_total", source="sw", reason="too_large") >= 1
    assert receiver.attempts == attempts
