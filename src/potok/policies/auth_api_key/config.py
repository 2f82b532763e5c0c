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

    @field_validator("header")
    @classmethod
    def _header(cls, value: str) -> str:
        return check_header_name(value)
