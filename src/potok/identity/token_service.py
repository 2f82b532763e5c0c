"""The built-in token service: login, refresh with rotation and reuse detection, logout, profile.

Access tokens are JWTs signed with the configured key (checked by `auth_jwt`
routes with `token_service: true`); refresh tokens are opaque and live in the
database as hashes (see refresh_tokens.py).
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

from potok.identity import audit as events
from potok.identity.audit import AuditLog
from potok.identity.config import TokenServiceConfig
from potok.identity.keys import SigningKey
from potok.identity.login_guard import LoginGuard, LoginLocked
from potok.identity.passwords import PasswordHasher
from potok.identity.principal import Principal
from potok.identity.refresh_tokens import RefreshTokenStore
from potok.identity.revocation import JTI, Revocations
from potok.identity.users import User, UserStore
from potok.identity.verifier import TokenRejected, TokenVerifier


class AuthFailure(Exception):
    """A refused auth call: status and a message that reveals nothing about which part failed."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


# A revocation cut is at most a second ahead of the clock that wrote it; allow for some
# skew between gateways, well inside the leeway (30 s) verifiers grant `iat`.
_CUT_AHEAD = 5.0

BAD_LOGIN = "invalid username or password"
BAD_REFRESH = "invalid refresh token"


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int

    def body(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }


class TokenIssuer:
    """Signs access tokens for users."""

    def __init__(self, config: TokenServiceConfig, key: SigningKey) -> None:
        self.config = config
        self.key = key

    def access_token(
        self, user: User, now: float | None = None, revoked_until: float | None = None
    ) -> tuple[str, str, float]:
        """(token, jti, expires_at). `revoked_until` is the user's latest revocation cut: the
        token's `iat` is at least that, so a token issued after a revocation in the same
        second is not taken for one issued before it."""
        clock = now if now is not None else time.time()
        issued = int(clock)
        expires_at = issued + int(self.config.access_ttl)
        not_before = issued
        if revoked_until is not None and issued < revoked_until <= clock + _CUT_AHEAD:
            issued = math.ceil(revoked_until)
        jti = secrets.token_hex(16)
        claims: dict[str, Any] = {
            "iss": self.config.issuer,
            "aud": self.config.audience,
            "sub": user.id,
            "name": user.username,
            "roles": list(user.roles),
            "iat": issued,
            "nbf": not_before,
            "exp": expires_at,
            "jti": jti,
        }
        if user.org:
            claims["org"] = user.org
        token = jwt.encode(
            claims, self.key.key, algorithm=self.key.algorithm, headers={"kid": self.key.kid}
        )
        return token, jti, float(expires_at)


class TokenService:
    def __init__(
        self,
        config: TokenServiceConfig,
        *,
        issuer: TokenIssuer,
        verifier: TokenVerifier,
        users: UserStore,
        refresh_tokens: RefreshTokenStore,
        hasher: PasswordHasher,
        guard: LoginGuard,
        revocations: Revocations,
        audit: AuditLog,
    ) -> None:
        self.config = config
        self.issuer = issuer
        self.verifier = verifier
        self.users = users
        self.refresh_tokens = refresh_tokens
        self.hasher = hasher
        self.guard = guard
        self.revocations = revocations
        self.audit = audit

    async def login(self, username: str, password: str, ip: str, request_id: str) -> TokenPair:
        try:
            await self.guard.check(username, ip)
            user = await self._verify(username, password, ip, request_id)
        except LoginLocked as exc:
            self.audit.record(
                events.LOGIN_LOCKED, "denied", actor=username, ip=ip, request_id=request_id
            )
            raise AuthFailure(
                429, "too many failed logins; try again later", retry_after=exc.retry_after
            ) from None
        if self.hasher.needs_rehash(user.password_hash):
            new_hash = await self.hasher.hash(password)
            user = await self.users.update(user.username, password_hash=new_hash)
        pair = await self._issue(user, family_id=None)
        self.audit.record(
            events.LOGIN_SUCCEEDED, "ok", actor=user.username, ip=ip, request_id=request_id
        )
        return pair

    async def _verify(self, username: str, password: str, ip: str, request_id: str) -> User:
        """The user if the password is right; the guard counts a failure (401) or refuses
        (LoginLocked, 429) in the same transaction that decides."""
        user = await self.users.by_username(username) if len(username) <= 128 else None
        # Unknown users are checked against a dummy hash: same work, same answer, same time.
        matches = await self.hasher.verify(user.password_hash if user else None, password)
        if user is None or not matches or user.disabled:
            await self.guard.failed(username, ip)
            reason = "unknown user" if user is None else "disabled" if matches else "bad password"
            self.audit.record(
                events.LOGIN_FAILED,
                "denied",
                actor=username,
                ip=ip,
                request_id=request_id,
                detail={"reason": reason},
            )
            raise AuthFailure(401, BAD_LOGIN)
        await self.guard.succeeded(username, ip)
        return user

    async def refresh(self, token: str, ip: str, request_id: str) -> TokenPair:
        if not token.startswith("rt_") or len(token) > 128:
            raise AuthFailure(401, BAD_REFRESH)
        redemption = await self.refresh_tokens.redeem(token, self.config.refresh_reuse_interval)
        record = redemption.record
        if record is None:
            raise AuthFailure(401, BAD_REFRESH)
        user = await self.users.by_id(record.user_id)
        # Audit records name the user as logins do, so `potok audit --actor alice` finds all.
        actor = user.username if user is not None else record.user_id
        detail: dict[str, object] = {"family": record.family_id, "user_id": record.user_id}
        if redemption.outcome == "reused":
            for jti, expires_at in redemption.revoked_access:
                await self.revocations.revoke(JTI, jti, expires_at)
            self.audit.record(
                events.REFRESH_REUSED, "denied", actor=actor, ip=ip, request_id=request_id,
                detail=detail,
            )  # fmt: skip
            raise AuthFailure(401, BAD_REFRESH)
        if redemption.outcome not in ("ok", "grace"):
            self.audit.record(
                events.REFRESH_DENIED, "denied", actor=actor, ip=ip, request_id=request_id,
                detail={**detail, "reason": redemption.outcome},
            )  # fmt: skip
            raise AuthFailure(401, BAD_REFRESH)
        if user is None or user.disabled:
            await self.refresh_tokens.revoke_family(record.family_id)
            self.audit.record(
                events.REFRESH_DENIED, "denied", actor=actor, ip=ip, request_id=request_id,
                detail={**detail, "reason": "user disabled"},
            )  # fmt: skip
            raise AuthFailure(401, BAD_REFRESH)
        pair = await self._issue(user, family_id=record.family_id)
        if redemption.outcome == "grace":
            detail["reuse_interval"] = True
        self.audit.record(
            events.REFRESH_ROTATED, "ok", actor=actor, ip=ip, request_id=request_id,
            detail=detail,
        )  # fmt: skip
        return pair

    async def logout(
        self, principal: Principal, refresh_token: str | None, ip: str, request_id: str
    ) -> None:
        """Revoke the access token, and the refresh family when its token is given."""
        if principal.token_id is not None and principal.expires_at is not None:
            await self.revocations.revoke(JTI, principal.token_id, principal.expires_at)
        if refresh_token:
            record = await self.refresh_tokens.family_of(refresh_token)
            if record is not None and record.user_id == principal.subject:
                for jti, expires_at in await self.refresh_tokens.revoke_family(record.family_id):
                    await self.revocations.revoke(JTI, jti, expires_at)
        user = await self.users.by_id(principal.subject)
        self.audit.record(
            events.LOGOUT,
            "ok",
            actor=user.username if user is not None else principal.subject,
            ip=ip,
            request_id=request_id,
            detail={"user_id": principal.subject},
        )

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of a `Bearer` access token issued here, not revoked."""
        if not authorization or not authorization[:7].lower() == "bearer ":
            raise AuthFailure(401, "a bearer access token is required")
        try:
            principal = self.verifier.verify(authorization[7:].strip())
        except TokenRejected as exc:
            raise AuthFailure(401, exc.reason) from None
        if self.revocations.denylist.is_revoked(
            principal.token_id, principal.subject, principal.issued_at
        ):
            raise AuthFailure(401, "token revoked")
        return principal

    async def _issue(self, user: User, family_id: str | None) -> TokenPair:
        revoked_until = await self.revocations.subject_cut(user.id)
        access, jti, expires_at = self.issuer.access_token(user, revoked_until=revoked_until)
        refresh, _ = await self.refresh_tokens.issue(
            user.id, family_id, self.config.refresh_ttl, jti, expires_at
        )
        return TokenPair(access, refresh, int(self.config.access_ttl))
