"""Config of the `auth_jwt` policy: whose tokens a route trusts, and where it finds them.

Issuers, keys, JWKS and claim names are identity's (`potok.identity.jwt_config`);
this block adds what only the policy decides.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from potok.identity.config import check_header_name
from potok.identity.jwt_config import JwtTrustConfig, check_cookie_name

AuthMode = Literal["required", "optional", "none"]


class AuthJwtConfig(JwtTrustConfig):
    """Validate a JWT bearer token; its claims become the request's identity."""

    auth: AuthMode = Field(
        "required",
        description=(
            "'required': no valid token, 401; 'optional': anonymous allowed but a bad token is "
            "still 401; 'none': the policy is off (turns a global one off for a route)."
        ),
    )
    cookie: str | None = Field(
        None, description="Also read the token from this cookie (browsers, WebSocket)."
    )
    query: str | None = Field(
        None, description="Also read the token from this query parameter (WebSocket)."
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

    def needs_an_issuer(self) -> bool:
        return self.auth != "none"

    @field_validator("cookie")
    @classmethod
    def _cookie(cls, value: str | None) -> str | None:
        return check_cookie_name(value)

    @field_validator("header")
    @classmethod
    def _header(cls, value: str) -> str:
        return check_header_name(value)
