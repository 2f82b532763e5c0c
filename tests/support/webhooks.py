"""Webhook tests: signers written from each provider's documentation (independent of
src/), a receiving service that records every delivery, and metric reading."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.net import free_port, request
from tests.support.upstream import _LoopThread

SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks spec's example
POTOK_SECRET = "whsec_" + base64.b64encode(b"potok-forwarding-key-0123456789").decode()
PLAIN_SECRET = "s3cr3t-for-the-tests-0123456789"
OTHER_SECRET = "another-secret-for-the-tests-987"


def _hmac(key: bytes, message: bytes, algorithm: str = "sha256") -> bytes:
    return hmac.new(key, message, algorithm).digest()


def standard_headers(
    body: bytes, secret: str = SW_SECRET, delivery: str = "msg_1", ts: int | None = None
) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    key = base64.b64decode(secret.removeprefix("whsec_"))
    sig = base64.b64encode(_hmac(key, f"{delivery}.{ts}.".encode() + body)).decode()
    return {"webhook-id": delivery, "webhook-timestamp": str(ts), "webhook-signature": f"v1,{sig}"}


def github_headers(
    body: bytes, secret: str = PLAIN_SECRET, delivery: str = "d-1", ts: int | None = None
) -> dict[str, str]:
    sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Hub-Signature-256": f"sha256={sig}",
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": "push",
    }


def stripe_headers(
    body: bytes, secret: str = PLAIN_SECRET, delivery: str = "", ts: int | None = None
) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    sig = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={ts},v1={sig},v0=deadbeef"}


def slack_headers(
    body: bytes, secret: str = PLAIN_SECRET, delivery: str = "", ts: int | None = None
) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    sig = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": f"v0={sig}"}


def max_headers(
    body: bytes, secret: str = PLAIN_SECRET, delivery: str = "", ts: int | None = None
) -> dict[str, str]:
    return {"X-Max-Bot-Api-Secret": secret}


def generic_headers(
    body: bytes, secret: str = PLAIN_SECRET, delivery: str = "g-1", ts: int | None = None
) -> dict[str, str]:
    """generic_hmac as the tests configure it: SHA-512, base64, over "{ts}.{body}"."""
    ts = int(time.time()) if ts is None else ts
    sig = base64.b64encode(_hmac(secret.encode(), f"{ts}.".encode() + body, "sha512")).decode()
    return {"X-Signature": f"sha512={sig}", "X-Timestamp": str(ts), "X-Delivery": delivery}


GENERIC_RULES = {
    "header": "X-Signature",
    "algorithm": "sha512",
    "encoding": "base64",
    "prefix": "sha512=",
    "signed": "timestamp.body",
    "timestamp_header": "X-Timestamp",
    "id_header": "X-Delivery",
}


def verify_potok(headers: dict[str, str], body: bytes, secret: str = POTOK_SECRET) -> bool:
    """Potok's own signature on a forwarded delivery (Standard Webhooks)."""
    expected = standard_headers(
        body, secret, headers["webhook-id"], int(headers["webhook-timestamp"])
    )
    return hmac.compare_digest(expected["webhook-signature"], headers["webhook-signature"])


@dataclass
class Received:
    id: str
    source: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A service that records deliveries. `fail_with` answers that status instead (after
    recording the attempt); `delay` holds each answer; overlapping deliveries of one id
    are counted in `overlaps` (two instances sending the same delivery at once)."""

    port: int = field(default_factory=free_port)
    deliveries: list[Received] = field(default_factory=list)
    attempts: int = 0
    fail_with: int | None = None
    delay: float = 0.0
    overlaps: int = 0
    _inflight: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = _LoopThread()
        self._runner: web.AppRunner | None = None
        self._thread.run(self._start())

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024).start()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        key = request.headers.get("Idempotency-Key", "")
        with self._lock:
            self.attempts += 1
            if key in self._inflight:
                self.overlaps += 1
            self._inflight.add(key)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.fail_with is not None:
                return web.Response(status=self.fail_with, text="failing")
            with self._lock:
                self.deliveries.append(
                    Received(
                        key,
                        request.headers.get("Potok-Webhook-Source", ""),
                        dict(request.headers),
                        body,
                        time.time(),
                    )
                )
            return web.Response(status=204)
        finally:
            with self._lock:
                self._inflight.discard(key)

    def ids(self) -> list[str]:
        with self._lock:
            return [d.id for d in self.deliveries]

    def stop(self) -> None:
        if self._runner is not None:
            self._thread.run(self._runner.cleanup())
        self._thread.stop()


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError("condition not met in time")


_SAMPLE = re.compile(r"^([a-z_]+)(?:\{([^}]*)\})? ([0-9.e+-]+)$")


def metric(port: int, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels` (0 when absent)."""
    text = request(port, "GET", "/api/v1/metrics").body.decode()
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total
