"""The `auth_jwt` policy: a valid bearer token, or 401; its claims become `exchange.identity`.

Verified tokens are cached (by their exact bytes) until they expire, so a
client repeating its token costs a dict lookup, not a signature check. The
denylist is consulted on every request, cached or not. Routes whose issuers
use only static keys run the check inline; a JWKS issuer makes the hook async
so an unknown kid can wait for the (rate-limited) refresh.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import unquote

from potok.identity import audit as events
from potok.identity.errors import MissingCredentials, Unauthorized
from potok.identity.keys import hmac_key, public_key, read_pem
from potok.identity.principal import Principal
from potok.identity.verifier import TokenRejected, TokenVerifier, TrustedIssuer
from potok.policies.auth_jwt.config import AuthJwtConfig, JwtIssuerConfig
from potok.policies.base import BuildContext, Policy, Stage

if TYPE_CHECKING:
    from potok.exchange import Exchange
    from potok.identity.services import IdentityServices


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

    __slots__ = ("_cookie", "_header", "_query")

    def __init__(self, config: AuthJwtConfig) -> None:
        self._header = config.header.lower().encode()
        self._cookie = config.cookie.encode() + b"=" if config.cookie else None
        self._query = config.query.encode() + b"=" if config.query else None

    def __call__(self, exchange: Exchange) -> str | None:
        header = self._header
        size = len(header)
        cookies: list[bytes] = []
        for name, value in exchange.headers:
            # Comparing lengths first spares lower-casing every other header's name.
            if len(name) == size and name.lower() == header:
                if value[:7].lower() != b"bearer ":
                    raise Unauthorized("expected 'Bearer <token>'", error="invalid_request")
                return value[7:].strip().decode("latin-1")
            if len(name) == 6 and name.lower() == b"cookie":
                cookies.append(value)
        if self._cookie is not None:
            for value in cookies:
                for raw in value.split(b";"):
                    part = raw.strip()
                    if part.startswith(self._cookie):
                        return part[len(self._cookie) :].decode("latin-1")
        if self._query is not None and exchange.query:
            return self._from_query(exchange)
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
    required = config.auth == "required"
    cache: dict[str, Principal] = {}
    cache_size = config.cache_size
    leeway = config.leeway
    denylist = identity.denylist
    audit = identity.audit
    route = context.route_name
    clock: Callable[[], float] = time.time

    def deny(exchange: Exchange, error: Unauthorized | MissingCredentials, reason: str) -> NoReturn:
        audit.record(
            events.REQUEST_DENIED,
            "401",
            actor=None,
            ip=exchange.client_ip,
            route=route,
            request_id=exchange.request_id,
            detail={"policy": "auth_jwt", "reason": reason},
        )
        raise error

    def remember(token: str, principal: Principal) -> None:
        if cache_size:
            if len(cache) >= cache_size:
                del cache[next(iter(cache))]  # oldest first: bounded, and no LRU bookkeeping
            cache[token] = principal

    def admit(exchange: Exchange, principal: Principal) -> None:
        if denylist.is_revoked(principal.token_id, principal.subject, principal.issued_at):
            deny(exchange, Unauthorized("token revoked"), "token revoked")
        exchange.identity = principal

    def cached(token: str) -> Principal | None:
        principal = cache.get(token)
        if principal is not None:
            expires = principal.expires_at
            if expires is None or clock() < expires + leeway:
                return principal
            del cache[token]
        return None

    def token_or_anonymous(exchange: Exchange) -> str | None:
        try:
            token = source(exchange)
        except Unauthorized as error:
            deny(exchange, error, "malformed authorization header")
        if token is None and required and exchange.identity is None:
            deny(exchange, MissingCredentials(), "no token")
        return token

    def check(exchange: Exchange) -> None:
        token = token_or_anonymous(exchange)
        if token is None:
            return
        principal = cached(token)
        if principal is None:
            try:
                principal = verifier.verify(token)
            except TokenRejected as exc:
                deny(exchange, Unauthorized(exc.reason), exc.reason)
            remember(token, principal)
        admit(exchange, principal)

    async def check_async(exchange: Exchange) -> None:
        token = token_or_anonymous(exchange)
        if token is None:
            return
        principal = cached(token)
        if principal is None:
            try:
                principal = await verifier.verify_async(token)
            except TokenRejected as exc:
                deny(exchange, Unauthorized(exc.reason), exc.reason)
            remember(token, principal)
        admit(exchange, principal)

    if verifier.uses_jwks:
        return Policy(name="auth_jwt", stage=Stage.AUTHENTICATE, on_request_async=check_async)
    return Policy(name="auth_jwt", stage=Stage.AUTHENTICATE, on_request=check)
