"""Config of the `auth_jwt` policy: who may issue tokens for a route, and with which keys."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from potok.config.base import ConfigModel
from potok.config.paths import ConfigPath
from potok.config.units import Duration, OptionalDuration
from potok.identity.config import SigningAlgorithm, check_header_name, check_key_material

AuthMode = Literal["required", "optional", "none"]
_COOKIE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
KID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


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


class AuthJwtConfig(ConfigModel):
    """Validate a JWT bearer token; its claims become the request's identity."""

    auth: AuthMode = Field(
        "required",
        description=(
            "'required': no valid token, 401; 'optional': anonymous allowed but a bad token is "
            "still 401; 'none': the policy is off (turns a global one off for a route)."
        ),
    )
    token_service: bool = Field(
        False, description="Accept tokens issued by the gateway's own token service."
    )
    issuers: tuple[JwtIssuerConfig, ...] = Field((), description="External issuers trusted.")
    leeway: OptionalDuration = Field(30.0, description="Clock skew allowed on exp, nbf and iat.")
    cookie: str | None = Field(
        None, description="Also read the token from this cookie (browsers, WebSocket)."
    )
    query: str | None = Field(
        None, description="Also read the token from this query parameter (WebSocket)."
    )
    claims: ClaimNamesConfig = Field(
        default_factory=ClaimNamesConfig, description="Claim names of the identity."
    )
    cache_size: int = Field(
        10_000,
        ge=0,
        description="Verified tokens remembered until they expire (0: verify every time).",
    )
    header: str = Field("Authorization", description="Header carrying `Bearer <token>`.")
    forward_token: bool = Field(
        True,
        description=(
            "Pass the token's header on to the upstream. false removes it (as Envoy's "
            "jwt_authn does by default): the upstream gets the identity headers, not a bearer "
            "token it could replay or log. A token from the query is never forwarded."
        ),
    )

    @field_validator("cookie")
    @classmethod
    def _cookie(cls, value: str | None) -> str | None:
        if value is not None and not _COOKIE.match(value):
            raise ValueError(f"{value!r} is not a valid cookie name")
        return value

    @field_validator("header")
    @classmethod
    def _header(cls, value: str) -> str:
        return check_header_name(value)

    @model_validator(mode="after")
    def _some_issuer(self) -> AuthJwtConfig:
        if self.auth != "none" and not self.token_service and not self.issuers:
            raise ValueError("trust the token service ('token_service: true') or list 'issuers'")
        names = [i.issuer for i in self.issuers]
        if len(set(names)) != len(names):
            raise ValueError("an issuer is listed twice")
        return self
