"""Config of JWT trust, shared by `auth_jwt` and `realtime.auth`: issuers, keys, JWKS, claims.

The models are identity's: the verifier, the JWKS key sets and the identity
services are built from them, and each user of JWTs (a policy, the realtime
endpoint) subclasses `JwtTrustConfig` for its own block.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from potok.config.base import ConfigModel
from potok.config.paths import ConfigPath
from potok.config.units import Duration, OptionalDuration
from potok.identity.config import SigningAlgorithm, check_key_material

KID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# A cookie-name is an RFC 7230 token (RFC 6265 §4.1.1).
_COOKIE_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def check_cookie_name(value: str | None) -> str | None:
    """A field validator's body: `value` if it can name a cookie, ValueError otherwise."""
    if value is not None and not _COOKIE_NAME.match(value):
        raise ValueError(f"{value!r} is not a valid cookie name")
    return value


class JwtKeyConfig(ConfigModel):
    """One verification key, pinned to one algorithm."""

    kid: str | None = Field(
        None, description="Key id; a token's `kid` must equal it (optional for a single key)."
    )
    algorithm: SigningAlgorithm = Field(description="The only algorithm accepted for this key.")
    secret: str | None = Field(
        None,
        description=(
            "HMAC secret (HS256/384/512): at least 32/48/64 bytes, not trivially weak; "
            "${VAR} or enc:v1:."
        ),
    )
    public_key: str | None = Field(
        None,
        description="PEM public key: RSA >= 2048 bits (RS256), P-256 (ES256), Ed25519 (EdDSA).",
    )
    public_key_file: ConfigPath | None = Field(
        None, description="Path of a PEM public key file (relative to the config file)."
    )

    @field_validator("kid")
    @classmethod
    def _kid(cls, value: str | None) -> str | None:
        if value is not None and not KID_PATTERN.match(value):
            raise ValueError("a kid is 1-128 of letters, digits, '.', '_', ':' and '-'")
        return value

    @model_validator(mode="after")
    def _material(self) -> JwtKeyConfig:
        check_key_material(
            self.algorithm, self.secret, self.public_key, self.public_key_file, "public"
        )
        return self


class JwksConfig(ConfigModel):
    """A JWKS endpoint, fetched in the background and cached."""

    url: str = Field(description="http(s) URL of the issuer's JSON Web Key Set.")
    algorithms: tuple[SigningAlgorithm, ...] = Field(
        ("RS256", "ES256", "EdDSA"),
        description="Algorithms accepted from this set; a key's own `alg`, if given, must agree.",
    )
    refresh_interval: Duration = Field(300.0, description="Regular re-fetch interval.")
    min_refresh_interval: Duration = Field(
        30.0,
        description=(
            "Least time between two fetches caused by tokens with an unknown kid, so a flood "
            "of random kids cannot hammer the identity provider."
        ),
    )
    timeout: Duration = Field(5.0, description="Fetch timeout.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("a JWKS URL starts with http:// or https://")
        return value


class JwtIssuerConfig(ConfigModel):
    """A trusted token issuer: its `iss`, accepted audiences and keys."""

    issuer: str = Field(description="Expected `iss` claim.")
    audiences: tuple[str, ...] = Field(
        (), description="Accepted `aud` values (any one suffices); empty: `aud` not checked."
    )
    keys: tuple[JwtKeyConfig, ...] = Field((), description="Static verification keys.")
    jwks: JwksConfig | None = Field(None, description="Keys from a JWKS URL instead.")

    @model_validator(mode="after")
    def _keys(self) -> JwtIssuerConfig:
        if bool(self.keys) == (self.jwks is not None):
            raise ValueError("give either 'keys' or 'jwks'")
        kids = [k.kid for k in self.keys]
        if len(self.keys) > 1 and None in kids:
            raise ValueError("with several keys each needs a 'kid'")
        if len(set(kids)) != len(kids):
            raise ValueError("two keys have the same 'kid'")
        return self


class ClaimNamesConfig(ConfigModel):
    """Which claims carry the caller's identity."""

    subject: str = Field("sub", description="Claim with the user id.")
    roles: str = Field("roles", description="Claim with a list of roles.")
    scopes: str = Field("scope", description="Claim with scopes (a list, or space-separated).")
    org: str = Field("org", description="Claim with the organisation (tenant).")


class JwtTrustConfig(ConfigModel):
    """Whose JWTs are accepted: the token service's and/or external issuers', with what
    clock skew and claim names. Blocks that verify JWTs extend it with their own fields."""

    token_service: bool = Field(
        False, description="Accept access tokens issued by the gateway's own token service."
    )
    issuers: tuple[JwtIssuerConfig, ...] = Field((), description="External issuers trusted.")
    leeway: OptionalDuration = Field(30.0, description="Clock skew allowed on exp, nbf and iat.")
    claims: ClaimNamesConfig = Field(
        default_factory=ClaimNamesConfig, description="Claim names of the identity."
    )

    def needs_an_issuer(self) -> bool:
        """Whether this block must trust someone (a block that is switched off need not)."""
        return True

    @model_validator(mode="after")
    def _some_issuer(self) -> JwtTrustConfig:
        if self.needs_an_issuer() and not self.token_service and not self.issuers:
            raise ValueError("trust the token service ('token_service: true') or list 'issuers'")
        names = [i.issuer for i in self.issuers]
        if len(set(names)) != len(names):
            raise ValueError("an issuer is listed twice")
        return self
