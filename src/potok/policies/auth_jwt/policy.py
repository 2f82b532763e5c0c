"""The `auth_jwt` policy: a valid bearer token, or 401; its claims become `exchange.identity`.

Verified tokens are cached until they expire, so a client repeating its token costs
a dict lookup, not a signature check. A token from the Authorization header is
cached under the header's raw value, which the connection notes while parsing, so
a repeated token is found without searching the headers, slicing or decoding. The
denylist is consulted for every request, but a cached token remembers the denylist
generation it was checked at and is asked again only after a revocation. A token
whose kid a JWKS issuer does not know yet makes the hook return a future that the
(rate-limited) key refresh settles; everything else runs inline.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from potok.identity import audit as events
from potok.identity.errors import MissingCredentials, Unauthorized
from potok.identity.principal import Principal
from potok.identity.token_source import CacheKey, TokenSource
from potok.identity.verifier import TokenRejected, UnknownKey
from potok.observability.tracing.otlp import INTERNAL, exception_event
from potok.policies.auth_jwt.config import AuthJwtConfig
from potok.policies.base import BuildContext, Policy, Stage, Waiting

if TYPE_CHECKING:
    from potok.exchange import Exchange

Cached = tuple[Principal, float, int]  # principal, valid until, denylist generation checked


def build(config: AuthJwtConfig | None, context: BuildContext) -> Policy | None:
    if config is None or config.auth == "none":
        return None
    identity = context.identity
    if identity is None:
        raise ValueError("auth_jwt needs the identity services")
    verifier = identity.verifier(config, "auth_jwt")
    source = TokenSource(header=config.header, cookie=config.cookie, query=config.query)
    standard_header = source.standard_header
    header_of = source.header
    required = config.auth == "required"
    cache: dict[CacheKey, Cached] = {}
    cache_size = config.cache_size
    leeway = config.leeway
    denylist = identity.denylist
    audit = identity.audit
    route = context.route_name
    clock: Callable[[], float] = time.time

    def deny(
        exchange: Exchange,
        error: Unauthorized | MissingCredentials,
        reason: str,
        actor: str | None = None,
    ) -> NoReturn:
        audit.record(
            events.REQUEST_DENIED,
            "401",
            actor=actor,
            ip=exchange.client_ip,
            route=route,
            request_id=exchange.request_id,
            detail={"policy": "auth_jwt", "reason": reason},
        )
        raise error

    def accept(exchange: Exchange, key: CacheKey, principal: Principal) -> None:
        """Not revoked: the caller is `principal`, and the token is remembered as checked."""
        if denylist.is_revoked(principal.token_id, principal.subject, principal.issued_at):
            # Signed and valid, so its subject is known: the record names who was refused.
            deny(exchange, Unauthorized("token revoked"), "token revoked", principal.subject)
        exchange.identity = principal
        if cache_size:
            if key not in cache and len(cache) >= cache_size:
                del cache[next(iter(cache))]  # oldest first: bounded, and no LRU bookkeeping
            expires = principal.expires_at
            until = math.inf if expires is None else expires + leeway
            cache[key] = (principal, until, denylist.generation)

    def cached(key: CacheKey) -> Principal | None:
        entry = cache.get(key)
        if entry is None:
            return None
        if clock() < entry[1]:
            return entry[0]
        del cache[key]
        return None

    async def verify_later(exchange: Exchange, key: CacheKey, token: str) -> None:
        trace = exchange.trace
        started = time.time_ns() if trace is not None else 0
        try:
            principal = await verifier.verify_async(token)  # refreshes the JWKS (rate-limited)
        except TokenRejected as exc:
            if trace is not None:
                event = exception_event(time.time_ns(), exc)
                trace.add_span("auth_jwt jwks", INTERNAL, started, {}, "token_rejected", (event,))
            deny(exchange, Unauthorized(exc.reason), exc.reason)
        if trace is not None:
            trace.add_span("auth_jwt jwks", INTERNAL, started, {})
        accept(exchange, key, principal)

    def check_fully(exchange: Exchange) -> Waiting | None:
        """Everything but a cached, already checked header token."""
        try:
            found = source(exchange)
        except Unauthorized as error:
            deny(exchange, error, "malformed authorization header")
        if found is None:
            if required and exchange.identity is None:
                deny(exchange, MissingCredentials(), "no token")
            return None
        key, token = found
        principal = cached(key)
        if principal is None:
            try:
                principal = verifier.verify(token)
            except UnknownKey as exc:
                if not verifier.uses_jwks:
                    deny(exchange, Unauthorized(exc.reason), exc.reason)
                return asyncio.get_running_loop().create_task(verify_later(exchange, key, token))
            except TokenRejected as exc:
                deny(exchange, Unauthorized(exc.reason), exc.reason)
        accept(exchange, key, principal)
        return None

    def check(exchange: Exchange) -> Waiting | None:
        # The hot path: a header token seen before, not expired, no revocation since.
        raw = exchange.authorization if standard_header else header_of(exchange)
        if raw is not None:
            entry = cache.get(raw)
            if entry is not None:
                principal, until, generation = entry
                if generation == denylist.generation and clock() < until:
                    exchange.identity = principal
                    return None
        return check_fully(exchange)

    return Policy(name="auth_jwt", stage=Stage.AUTHENTICATE, on_request=check)
