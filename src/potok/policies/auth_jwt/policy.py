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
from urllib.parse import unquote

from potok.identity import audit as events
from potok.identity.errors import MissingCredentials, Unauthorized
from potok.identity.keys import hmac_key, public_key, read_pem
from potok.identity.principal import Principal
from potok.identity.verifier import TokenRejected, TokenVerifier, TrustedIssuer, UnknownKey
from potok.policies.auth_jwt.config import AuthJwtConfig, JwtIssuerConfig
from potok.policies.base import BuildContext, Policy, Stage, Waiting

if TYPE_CHECKING:
    from potok.exchange import Exchange
    from potok.identity.services import IdentityServices

CacheKey = bytes | str  # the raw header value, or a token from a cookie or the query
Cached = tuple[Principal, float, int]  # principal, valid until, denylist generation checked


def trusted_issuer(config: JwtIssuerConfig, identity: IdentityServices) -> TrustedIssuer:
    keys = {}
    for key in config.keys:
        if key.secret is not None:
            keys[key.kid] = hmac_key(key.algorithm, key.secret, key.kid)
        else:
            keys[key.kid] = public_key(
                key.algorithm, read_pem(key.public_key, key.public_key_file), key.kid
            )
    jwks = identity.jwks(config.jwks) if config.jwks is not None else None
    return TrustedIssuer(config.issuer, config.audiences, keys, jwks)


class TokenSource:
    """Finds the token: the Authorization header, then the cookie, then the query parameter."""

    __slots__ = ("_cookie", "_header", "_query", "standard_header")

    def __init__(self, config: AuthJwtConfig) -> None:
        self._header = config.header.lower().encode()
        self._cookie = config.cookie.encode() + b"=" if config.cookie else None
        self._query = config.query.encode() + b"=" if config.query else None
        # Authorization itself: the connection has noted its value (exchange.authorization).
        self.standard_header = self._header == b"authorization"

    def header(self, exchange: Exchange) -> bytes | None:
        """The raw value of the token header (the first one), if the request has it."""
        if self.standard_header:
            return exchange.authorization
        header = self._header
        size = len(header)
        for name, value in exchange.headers:
            # Comparing lengths first spares lower-casing every other header's name.
            if len(name) == size and name.lower() == header:
                return value
        return None

    def __call__(self, exchange: Exchange) -> tuple[CacheKey, str] | None:
        """(cache key, token), or None without one; Unauthorized for a malformed header."""
        raw = self.header(exchange)
        if raw is not None:
            if raw[:7].lower() != b"bearer ":
                raise Unauthorized("expected 'Bearer <token>'", error="invalid_request")
            return raw, raw[7:].strip().decode("latin-1")
        token = self._from_cookie(exchange) if self._cookie is not None else None
        if token is None and self._query is not None and exchange.query:
            token = self._from_query(exchange)
        return (token, token) if token is not None else None

    def _from_cookie(self, exchange: Exchange) -> str | None:
        assert self._cookie is not None
        for name, value in exchange.headers:
            if len(name) == 6 and name.lower() == b"cookie":
                for raw in value.split(b";"):
                    part = raw.strip()
                    if part.startswith(self._cookie):
                        return part[len(self._cookie) :].decode("latin-1")
        return None

    def _from_query(self, exchange: Exchange) -> str | None:
        # The token is taken out of the query: it must not reach the upstream or its logs.
        assert self._query is not None
        found: str | None = None
        kept = []
        for part in exchange.query[1:].split(b"&"):
            if found is None and part.startswith(self._query):
                found = unquote(part[len(self._query) :].decode("latin-1"))
            else:
                kept.append(part)
        if found is not None:
            exchange.query = b"?" + b"&".join(kept) if kept else b""
        return found


def build(config: AuthJwtConfig | None, context: BuildContext) -> Policy | None:
    if config is None or config.auth == "none":
        return None
    identity = context.identity
    if identity is None:
        raise ValueError("auth_jwt needs the identity services")
    issuers = [trusted_issuer(i, identity) for i in config.issuers]
    if config.token_service:
        if identity.token_key is None:
            raise ValueError("auth_jwt.token_service needs auth.token_service.enabled")
        issuers.append(identity.token_issuer())
    verifier = TokenVerifier(issuers, config.leeway, config.claims, identity.headers)
    source = TokenSource(config)
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
        try:
            principal = await verifier.verify_async(token)  # refreshes the JWKS (rate-limited)
        except TokenRejected as exc:
            deny(exchange, Unauthorized(exc.reason), exc.reason)
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
