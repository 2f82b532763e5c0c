"""JWT verification: header checks, key choice by issuer and kid, then PyJWT with one algorithm.

Order matters: the header is judged (algorithm known, kid well-formed) before
any key is looked up, and the key is chosen before the signature is checked,
with the key's own algorithm as the only one PyJWT may use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt import exceptions as jwt_errors

from potok.identity.forwarding import IdentityHeaders
from potok.identity.jwks import JwksKeySet
from potok.identity.jwt_config import KID_PATTERN, ClaimNamesConfig
from potok.identity.keys import VerifyKey
from potok.identity.principal import Principal

MAX_TOKEN_BYTES = 8192
# A compact JWS: three base64url parts without padding (RFC 7515 §2, §7.1).
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# Unused low bits of a part's last character, by the part's length mod 4: they must be zero,
# or two spellings decode to the same bytes (and 1 is no valid length at all).
_SPARE_BITS = {0: 0, 2: 0b1111, 3: 0b11}


def canonical(token: str) -> bool:
    """Whether `token` is a compact JWS in canonical base64url: no `=` padding, no other
    alphabet, no non-zero spare bits. PyJWT alone tolerates all three."""
    if not _COMPACT.fullmatch(token):
        return False
    for part in token.split("."):
        spare = _SPARE_BITS.get(len(part) % 4)
        if spare is None or _B64URL.index(part[-1]) & spare:
            return False
    return True


KNOWN_ALGORITHMS = frozenset({"HS256", "HS384", "HS512", "RS256", "ES256", "EdDSA"})


class TokenRejected(Exception):
    """The token is not acceptable; `reason` is safe to show the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownKey(TokenRejected):
    """No key with the token's kid (yet): a JWKS refresh may find it."""

    def __init__(self, issuer: TrustedIssuer, kid: str) -> None:
        super().__init__("unknown signing key")
        self.issuer = issuer
        self.kid = kid


@dataclass
class TrustedIssuer:
    issuer: str
    audiences: tuple[str, ...] = ()
    keys: dict[str | None, VerifyKey] = field(default_factory=dict)
    jwks: JwksKeySet | None = None

    def static_key(self, kid: str | None) -> VerifyKey | None:
        if kid is None:
            # A token without kid is accepted only when the issuer has exactly one key.
            return next(iter(self.keys.values())) if len(self.keys) == 1 else None
        key = self.keys.get(kid)
        if key is None and len(self.keys) == 1 and None in self.keys:
            return self.keys[None]
        return key


_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (jwt_errors.ExpiredSignatureError, "token expired"),
    (jwt_errors.ImmatureSignatureError, "token not yet valid"),
    (jwt_errors.InvalidIssuerError, "wrong issuer"),
    (jwt_errors.InvalidAudienceError, "wrong audience"),
    (jwt_errors.MissingRequiredClaimError, "required claim missing"),
    (jwt_errors.InvalidSignatureError, "invalid signature"),
    (jwt_errors.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt_errors.InvalidKeyError, "key does not fit the algorithm"),
    (jwt_errors.InvalidTokenError, "malformed token"),
)


def _strings(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list | tuple):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


class TokenVerifier:
    """Verifies tokens of the issuers it trusts and turns their claims into a Principal."""

    def __init__(
        self,
        issuers: Iterable[TrustedIssuer],
        leeway: float,
        claims: ClaimNamesConfig,
        headers: IdentityHeaders,
    ) -> None:
        self.issuers = {i.issuer: i for i in issuers}
        self._only = next(iter(self.issuers.values())) if len(self.issuers) == 1 else None
        self.leeway = leeway
        self.claims = claims
        self.headers = headers

    @property
    def uses_jwks(self) -> bool:
        return any(i.jwks is not None for i in self.issuers.values())

    def verify(self, token: str) -> Principal:
        """Verify with the keys known now; UnknownKey when a JWKS might know the kid."""
        issuer, kid, algorithm = self._inspect(token)
        return self._verify_with(token, issuer, self._key(issuer, kid), algorithm)

    async def verify_async(self, token: str) -> Principal:
        """As `verify`, but an unknown kid of a JWKS issuer refreshes the set (rate-limited)."""
        issuer, kid, algorithm = self._inspect(token)
        try:
            key = self._key(issuer, kid)
        except UnknownKey:
            if issuer.jwks is None or kid is None:
                raise
            found = await issuer.jwks.key_for(kid)
            if found is None:
                raise
            key = found
        return self._verify_with(token, issuer, key, algorithm)

    def _inspect(self, token: str) -> tuple[TrustedIssuer, str | None, str]:
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenRejected("token too large")
        if not canonical(token):
            raise TokenRejected("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt_errors.InvalidTokenError:
            raise TokenRejected("malformed token") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in KNOWN_ALGORITHMS:
            raise TokenRejected("algorithm not allowed")
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or not KID_PATTERN.match(kid)):
            raise TokenRejected("malformed key id")
        issuer = self._only
        if issuer is None:
            try:
                unverified = jwt.decode(token, options={"verify_signature": False})
            except jwt_errors.InvalidTokenError:
                raise TokenRejected("malformed token") from None
            name = unverified.get("iss")
            issuer = self.issuers.get(name) if isinstance(name, str) else None
            if issuer is None:
                raise TokenRejected("wrong issuer")
        return issuer, kid, algorithm

    def _key(self, issuer: TrustedIssuer, kid: str | None) -> VerifyKey:
        if issuer.jwks is not None:
            key = issuer.jwks.keys.get(kid) if kid is not None else None
            if key is None and kid is None and len(issuer.jwks.keys) == 1:
                key = next(iter(issuer.jwks.keys.values()))
        else:
            key = issuer.static_key(kid)
        if key is None:
            raise UnknownKey(issuer, kid or "")
        return key

    def _verify_with(
        self, token: str, issuer: TrustedIssuer, key: VerifyKey, algorithm: str
    ) -> Principal:
        if algorithm != key.algorithm:
            raise TokenRejected("algorithm not allowed")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=list(issuer.audiences) if issuer.audiences else None,
                issuer=issuer.issuer,
                leeway=self.leeway,
                options={
                    "require": ["exp", "iss", self.claims.subject],
                    "verify_aud": bool(issuer.audiences),
                },
            )
        except jwt_errors.PyJWTError as exc:
            for kind, reason in _ERRORS:
                if isinstance(exc, kind):
                    raise TokenRejected(reason) from None
            raise TokenRejected("malformed token") from None
        return self.principal(claims, issuer.issuer)

    def principal(self, claims: dict[str, Any], issuer: str) -> Principal:
        names = self.claims
        subject = claims.get(names.subject)
        if not isinstance(subject, str) or not subject:
            raise TokenRejected("required claim missing")
        roles = _strings(claims.get(names.roles))
        scopes = _strings(claims.get(names.scopes))
        org_value = claims.get(names.org)
        org = org_value if isinstance(org_value, str) and org_value else None
        jti = claims.get("jti")
        iat = claims.get("iat")
        exp = claims.get("exp")
        return Principal(
            subject=subject,
            kind="user",
            roles=roles,
            scopes=scopes,
            org=org,
            token_id=jti if isinstance(jti, str) else None,
            issued_at=float(iat) if isinstance(iat, int | float) else 0.0,
            expires_at=float(exp) if isinstance(exp, int | float) else None,
            issuer=issuer,
            upstream_lines=self.headers.build(subject, roles, scopes, org),
        )
