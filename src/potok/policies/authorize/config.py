"""Config of the `authorize` policy: roles, scopes and tenant isolation per route."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from potok.config.base import ConfigModel
from potok.identity.config import check_header_name

_PARAM = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class OrgInjectionConfig(ConfigModel):
    """Hand the caller's organisation to the upstream, set by the gateway (never the client)."""

    query: str | None = Field(None, description="Query parameter to set (replaces any given).")
    header: str | None = Field(None, description="Header to set (replaces any given).")

    @field_validator("header")
    @classmethod
    def _header(cls, value: str | None) -> str | None:
        return check_header_name(value) if value is not None else None

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | None) -> str | None:
        if value is not None and not _PARAM.match(value):
            raise ValueError("a query parameter name is letters, digits and '_'")
        return value


class TenantConfig(ConfigModel):
    """A path parameter that must equal a claim of the caller: 403 otherwise (no IDOR)."""

    param: str = Field(description="Path parameter of the route, e.g. org_id for /orgs/{org_id}.")
    claim: str = Field("org", description="Identity attribute it must equal: 'org' or 'sub'.")
    inject: OrgInjectionConfig | None = Field(
        None, description="Also pass the organisation upstream as a query parameter or header."
    )

    @field_validator("param")
    @classmethod
    def _param(cls, value: str) -> str:
        if not _PARAM.match(value):
            raise ValueError("a path parameter name is letters, digits and '_'")
        return value

    @field_validator("claim")
    @classmethod
    def _claim(cls, value: str) -> str:
        if value not in ("org", "sub"):
            raise ValueError("'claim' is 'org' (the organisation) or 'sub' (the user)")
        return value


class AuthorizeConfig(ConfigModel):
    """Who may call the route, once an auth policy has said who the caller is."""

    authenticated: bool = Field(
        True, description="Refuse anonymous callers (401) even without roles or scopes."
    )
    roles: tuple[str, ...] = Field((), description="Roles the caller needs.")
    roles_match: Literal["any", "all"] = Field("any", description="Any one role, or all of them.")
    scopes: tuple[str, ...] = Field((), description="Scopes the caller needs.")
    scopes_match: Literal["any", "all"] = Field("all", description="Any one scope, or all of them.")
    tenant: TenantConfig | None = Field(None, description="Tenant isolation rule.")

    @model_validator(mode="after")
    def _meaningful(self) -> AuthorizeConfig:
        if not self.authenticated and (self.roles or self.scopes or self.tenant):
            raise ValueError("roles, scopes and tenant need 'authenticated: true'")
        return self
