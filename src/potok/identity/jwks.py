"""A JWKS endpoint's keys: fetched in the background, refreshed on an unknown kid, rate-limited.

Fetches are single-flight (concurrent callers share one) and a refresh caused
by an unknown kid happens at most once per `min_refresh_interval`, so a flood
of tokens with random kids costs the identity provider one request, not one
per token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import structlog
from jwt import PyJWK
from jwt.exceptions import PyJWKError, PyJWTError

from potok.identity.jwt_config import KID_PATTERN, JwksConfig
from potok.identity.keys import KeyMaterialError, VerifyKey, check_key_type

log = structlog.get_logger("potok.identity.jwks")

MAX_JWKS_BYTES = 1024 * 1024
MAX_KEYS = 100
_DEFAULT_ALG = {("RSA", None): "RS256", ("EC", "P-256"): "ES256", ("OKP", "Ed25519"): "EdDSA"}


def keys_from_document(
    document: Any, algorithms: tuple[str, ...]
) -> tuple[dict[str, VerifyKey], list[str]]:
    """The usable keys of a JWKS document, by kid, and what was skipped (with why)."""
    keys: dict[str, VerifyKey] = {}
    skipped: list[str] = []
    items = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    for item in items[:MAX_KEYS]:
        if not isinstance(item, dict):
            continue
        kid = item.get("kid")
        if not isinstance(kid, str) or not KID_PATTERN.match(kid):
            skipped.append("a key without a usable kid")
            continue
        refusal = _not_for_verifying(item)
        if refusal is not None:
            skipped.append(f"{kid}: {refusal}")
            continue
        kty, crv = item.get("kty"), item.get("crv")
        curve = str(crv) if kty != "RSA" and crv is not None else None
        algorithm = item.get("alg") or _DEFAULT_ALG.get((str(kty), curve))
        if algorithm not in algorithms:
            skipped.append(f"{kid}: algorithm {algorithm!r} not accepted")
            continue
        if kty == "oct":
            skipped.append(f"{kid}: symmetric keys are never taken from a JWKS")
            continue
        try:
            jwk = PyJWK(item, algorithm=algorithm)
            check_key_type(algorithm, jwk.key)
        except (PyJWKError, PyJWTError, KeyMaterialError, ValueError, TypeError) as exc:
            skipped.append(f"{kid}: {exc}")
            continue
        keys[kid] = VerifyKey(kid, algorithm, jwk.key)
    return keys, skipped


def _not_for_verifying(item: dict[str, Any]) -> str | None:
    """Why a JWK may not verify signatures (RFC 7517 §4.2-4.3), or None if it may."""
    use = item.get("use")
    if use is not None and use != "sig":
        return f"'use' is {use!r}, not 'sig'"
    ops = item.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return f"'key_ops' {ops!r} does not allow 'verify'"
    return None


def _fetch(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data: bytes = response.read(MAX_JWKS_BYTES + 1)
    if len(data) > MAX_JWKS_BYTES:
        raise ValueError("JWKS document too large")
    return data


class JwksKeySet:
    """The keys of one JWKS URL, shared by every route of a worker that trusts it."""

    def __init__(self, config: JwksConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.keys: dict[str, VerifyKey] = {}
        self.fetches = 0
        self._clock = clock
        self._last_attempt = float("-inf")
        self._inflight: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def key_for(self, kid: str) -> VerifyKey | None:
        """The key with this kid; an unknown kid refreshes the set if the rate limit allows."""
        key = self.keys.get(kid)
        if key is not None:
            return key
        if self._inflight is not None:
            await asyncio.shield(self._inflight)
        elif self._clock() - self._last_attempt >= self.config.min_refresh_interval:
            await self.refresh()
        return self.keys.get(kid)

    async def refresh(self) -> None:
        """Fetch now (or join the fetch already running)."""
        if self._inflight is not None:
            await asyncio.shield(self._inflight)
            return
        self._last_attempt = self._clock()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight = future
        try:
            self.fetches += 1
            data = await asyncio.to_thread(_fetch, self.config.url, self.config.timeout)
            keys, skipped = keys_from_document(json.loads(data), self.config.algorithms)
            if keys or not self.keys:
                self.keys = keys
            for reason in skipped:
                log.warning("JWKS key skipped", url=self.config.url, reason=reason)
        except Exception as exc:
            log.warning("fetching JWKS failed", url=self.config.url, error=str(exc))
        finally:
            self._inflight = None
            future.set_result(None)

    async def _refresh_forever(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.config.refresh_interval)
