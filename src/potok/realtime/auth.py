"""Who is on a realtime connection: JWTs checked by the identity layer's TokenVerifier.

The same verifier (`potok.identity.verifier`) and the same denylist as the
`auth_jwt` policy, with the issuers the `realtime.auth` block trusts. A token
arrives in the `authenticate` message or, at connect time, in a query
parameter or cookie (browsers cannot set headers on a WebSocket).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import unquote

from potok.identity.principal import Principal
from potok.identity.verifier import TokenRejected, TokenVerifier, UnknownKey
from potok.policies.auth_jwt.policy import trusted_issuer
from potok.realtime.config import RealtimeAuthConfig

if TYPE_CHECKING:
    from potok.exchange import Exchange
    from potok.identity.services import IdentityServices

__all__ = ["RealtimeAuth", "TokenRejected"]


class RealtimeAuth:
    def __init__(
        self,
        config: RealtimeAuthConfig,
        identity: IdentityServices,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        issuers = [trusted_issuer(i, identity) for i in config.issuers]
        if config.token_service:
            if identity.token_key is None:
                raise ValueError("realtime.auth.token_service needs auth.token_service.enabled")
            issuers.append(identity.token_issuer())
        self.verifier = TokenVerifier(issuers, config.leeway, config.claims, identity.headers)
        self.denylist = identity.denylist
        self.leeway = config.leeway
        self._clock = clock
        self._query = config.query.encode() + b"=" if config.query else None
        self._cookie = config.cookie.encode() + b"=" if config.cookie else None

    async def verify(self, token: str) -> Principal:
        """The token's principal; TokenRejected (with a reason safe to show) otherwise."""
        try:
            principal = self.verifier.verify(token)
        except UnknownKey:
            principal = await self.verifier.verify_async(token)  # a JWKS refresh may know it
        self.check_still_valid(principal)
        return principal

    def now(self) -> float:
        return self._clock()

    def check_still_valid(self, principal: Principal) -> None:
        """TokenRejected once the token has expired or been revoked."""
        expires = principal.expires_at
        if expires is not None and self._clock() >= expires + self.leeway:
            raise TokenRejected("token expired")
        if self.denylist.is_revoked(principal.token_id, principal.subject, principal.issued_at):
            raise TokenRejected("token revoked")

    def token_at_connect(self, exchange: Exchange) -> str | None:
        """A token in the handshake's query parameter or cookie, if configured and present."""
        if self._query is not None and exchange.query:
            for part in exchange.query[1:].split(b"&"):
                if part.startswith(self._query):
                    return unquote(part[len(self._query) :].decode("latin-1"))
        if self._cookie is not None:
            for name, value in exchange.headers:
                if name.lower() != b"cookie":
                    continue
                for raw in value.split(b";"):
                    part = raw.strip()
                    if part.startswith(self._cookie):
                        return part[len(self._cookie) :].decode("latin-1")
        return None
