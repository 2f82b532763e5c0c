"""Answering HTTP-01 challenges: `GET /.well-known/acme-challenge/<token>` (RFC 8555 8.3).

The responder is the terminal of a route the runtime enters into the route table
beside the own API's endpoints, only when `acme:` is configured: other paths pay
nothing (the trie never walks into it), and no policy runs before it (a CA's
validation request must not meet a rate limit or an IP filter).

Answers this process published are in memory. Any other token is looked up in the
shared storage, because the CA's request may reach an instance other than the one
that ordered (a load balancer, another worker on the same port); such lookups are
bounded, so a flood of made-up tokens cannot queue unbounded work on the database.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog

from potok.routing.endpoints import ACME_CHALLENGE_PATH

if TYPE_CHECKING:
    from potok.acme.store import CertificateStore
    from potok.exchange import Exchange

log = structlog.get_logger("potok.acme")

_PREFIX = ACME_CHALLENGE_PATH.encode() + b"/"
_BASE64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
MAX_TOKEN = 128  # Let's Encrypt's are 43 characters (32 random bytes)
MAX_LOOKUPS = 64  # storage lookups in flight per process
_CONTENT_TYPE = b"application/octet-stream"


def token_of(path: bytes) -> str | None:
    """The token in a challenge path, or None for anything that cannot be one."""
    if not path.startswith(_PREFIX):
        return None
    token = path[len(_PREFIX) :]
    if not token or len(token) > MAX_TOKEN or token.translate(None, _BASE64URL):
        return None
    return token.decode("ascii")


class ChallengeResponder:
    """Publishes answers (for the manager) and serves them (as a route's terminal)."""

    def __init__(self, store: CertificateStore | None = None) -> None:
        self.store = store
        self._answers: dict[str, tuple[bytes, float]] = {}
        self._lookups: set[asyncio.Task[None]] = set()

    def publish(self, token: str, key_authorization: str, expires: float) -> None:
        self._answers[token] = (key_authorization.encode("ascii"), expires)

    def withdraw(self, token: str) -> None:
        self._answers.pop(token, None)

    def __call__(self, exchange: Exchange) -> None:
        token = token_of(exchange.path)
        if token is None:
            exchange.problem(404, "not an ACME challenge token", title="Not Found")
            return
        local = self._answers.get(token)
        if local is not None and local[1] >= time.time():
            log.info("acme challenge answered", token=token, client=exchange.client_ip)
            exchange.respond(200, local[0], _CONTENT_TYPE)
            return
        if self.store is None:
            exchange.problem(404, "no pending ACME challenge with this token", title="Not Found")
            return
        if len(self._lookups) >= MAX_LOOKUPS:
            exchange.problem(503, "too many challenge lookups", headers=((b"Retry-After", b"1"),))
            return
        task = asyncio.get_running_loop().create_task(self._look_up(exchange, token, self.store))
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)

    async def _look_up(self, exchange: Exchange, token: str, store: CertificateStore) -> None:
        try:
            answer = await store.challenge(token)
        except Exception as exc:  # the database is down: the CA will see a failure
            log.warning("acme challenge lookup failed", token=token, error=str(exc))
            if exchange.is_current():
                exchange.problem(503, "the certificate storage is unavailable")
            return
        if not exchange.is_current():
            return
        if answer is None:
            exchange.problem(404, "no pending ACME challenge with this token", title="Not Found")
            return
        log.info("acme challenge answered", token=token, client=exchange.client_ip, shared=True)
        exchange.respond(200, answer.encode("ascii"), _CONTENT_TYPE)
