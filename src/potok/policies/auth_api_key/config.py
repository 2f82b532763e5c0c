"""Config of the `auth_api_key` policy: machine clients presenting a key."""

from __future__ import annotations

from pydantic import Field, field_validator

from potok.config.base import ConfigModel
from potok.identity.config import check_header_name
from potok.policies.auth_jwt.config import AuthMode


class AuthApiKeyConfig(ConfigModel):
    """Authenticate by an API key created with `potok keys create` (stored hashed)."""

    auth: AuthMode = Field(
        "required",
        description=(
            "'required': no valid key, 401; 'optional': anonymous allowed but a bad key is "
            "still 401; 'none': the policy is off."
        ),
    )
    header: str = Field("X-API-Key", description="Header the key is read from.")
    forward_key: bool = Field(
        False,
        description=(
            "Pass the key's header on to the upstream. Default false: the key is removed once "
            "verified, so the upstream (and its logs) never holds a credential valid at the "
            "gateway; it gets the identity headers instead."
        ),
    )

    @field_validator("header")
    @classmethod
    def _header(cls, value: str) -> str:
        return check_header_name(value)
