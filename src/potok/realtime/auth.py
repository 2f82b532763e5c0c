"""Who is on a realtime connection: JWTs checked by the identity layer's TokenVerifier.

The same verifier (`potok.identity.verifier`, built by the identity services)
and the same denylist as the `auth_jwt` policy, with the issuers the
`realtime.auth` block trusts. A token arrives in the `authenticate` message or,
at connect time, in a cookie or query parameter (browsers cannot set headers on
a WebSocket), found by the same extractor as `auth_jwt`'s
(`potok.identity.token_source`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from potok.identity.principal import Principal
from potok.identity.token_source import TokenCarrier, TokenSource
from potok.identity.verifier import TokenRejected, UnknownKey
from potok.realtime.config import RealtimeAuthConfig

if TYPE_CHECKING:
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
        self.verifier = identity.verifier(config, "realtime.auth")
        self.denylist = identity.denylist
        self.leeway = config.leeway
        self._clock = clock
        # No header: a browser cannot set one on a WebSocket, and a token for the
        # connection that is not in the handshake comes in the `authenticate` message.
        self._source = TokenSource(cookie=config.cookie, query=config.query)

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

    def token_at_connect(self, request: TokenCarrier) -> str | None:
        """A token in the handshake's cookie or query parameter, if configured and present
        (taken out of the query)."""
        return self._source.token(request)
