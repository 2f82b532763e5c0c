"""Config of the `auth_mtls` policy: callers identified by their TLS client certificate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from potok.config.base import ConfigModel


class AuthMtlsConfig(ConfigModel):
    """Authenticate by the client certificate the listener verified (`tls.client_auth`)."""

    auth: Literal["required", "optional", "none"] = Field(
        "required",
        description=(
            "'required': no verified client certificate, 401; 'optional': anonymous allowed; "
            "'none': the policy is off."
        ),
    )
    subjects: tuple[str, ...] = Field(
        (),
        description=(
            "Subjects (the certificate's CN, else its first SAN) allowed; others get 403. "
            "Empty: any certificate signed by the listener's client_ca."
        ),
    )
    roles: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="Roles by subject, for `authorize.roles` (e.g. {billing-service: [billing]}).",
    )
    scopes: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="Scopes by subject, for `authorize.scopes`."
    )
