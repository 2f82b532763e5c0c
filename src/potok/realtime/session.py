"""The session rule both realtime endpoints share (/api/v1/ws and Socket.IO).

A connection's identity is the principal of the token it authenticated with,
and it lasts only as long as that token is good:

- at the token's expiry (plus the configured leeway) the session ends at once
  (a timer, not the next heartbeat);
- a revoked token (the identity layer's denylist: logout, password change,
  `potok tokens revoke`) ends it at the next heartbeat;
- re-authenticating (a fresh token before the old one expires) must keep the
  subject and the organisation: a connection never changes whose it is, so a
  subscription authorised for one org cannot outlive a switch to another.
  A new token for the same identity may carry other roles: every channel the
  connection holds is authorised again, and the ones no longer allowed are
  dropped (the endpoint tells the client which).

Each endpoint owns one `SessionGuard` per connection and says, through
`on_end`, how its protocol ends a session (plain WebSocket: `error` frame and
close 4401; Socket.IO: `error` event and disconnect).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from potok.identity.verifier import TokenRejected
from potok.realtime import protocol as proto

if TYPE_CHECKING:
    from potok.identity.principal import Principal
    from potok.realtime.auth import RealtimeAuth
    from potok.realtime.channels import ChannelRules

OnEnd = Callable[[str, str], None]  # (error code, reason)

IDENTITY_CHANGE = "a connection cannot change its identity (subject and organisation)"


def error_code(rejected: TokenRejected) -> str:
    """The protocol's error code for a refused token."""
    return proto.TOKEN_EXPIRED if rejected.reason == "token expired" else proto.INVALID_TOKEN


class SessionGuard:
    """One connection's identity over time: admit, re-admit, end at expiry or revocation."""

    __slots__ = ("_auth", "_ended", "_loop", "_on_end", "_timer", "principal")

    def __init__(self, auth: RealtimeAuth, on_end: OnEnd) -> None:
        self._auth = auth
        self._on_end = on_end
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._ended = False
        self.principal: Principal | None = None

    def admit(self, principal: Principal) -> str | None:
        """Take `principal` (already verified) as the connection's identity; the reason
        for refusing instead, when it would change the subject or the organisation."""
        current = self.principal
        if current is not None and (
            principal.subject != current.subject or principal.org != current.org
        ):
            return IDENTITY_CHANGE
        self.principal = principal
        self._schedule_expiry(principal)
        return None

    def check(self) -> None:
        """At a heartbeat: end the session if the token has expired or been revoked."""
        principal = self.principal
        if principal is None or self._ended:
            return
        try:
            self._auth.check_still_valid(principal)
        except TokenRejected as exc:
            self._end(error_code(exc), exc.reason)

    def stop(self) -> None:
        """The connection is gone: no timer may fire for it."""
        self._ended = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule_expiry(self, principal: Principal) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        expires = principal.expires_at
        if expires is None:
            return
        delay = expires + self._auth.leeway - self._auth.now()
        self._timer = self._loop.call_later(max(0.0, delay), self._expired)

    def _expired(self) -> None:
        self._timer = None
        self.check()
        principal = self.principal
        if not self._ended and principal is not None:
            # The loop's timer runs on its own clock (millisecond ticks, and not the wall
            # clock `exp` is in): it can fire a hair early, when the token is still valid.
            # Re-arm rather than wait for the next heartbeat.
            self._schedule_expiry(principal)

    def _end(self, code: str, reason: str) -> None:
        self.stop()
        self._on_end(code, reason)


def no_longer_allowed(
    rules: ChannelRules, principal: Principal, channels: Iterable[str]
) -> list[str]:
    """The channels `principal` may not subscribe to (after a re-authentication)."""
    return [c for c in channels if not rules.decide(c, principal, "subscribe").allowed]
