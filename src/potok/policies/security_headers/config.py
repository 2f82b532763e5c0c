"""Config of the `security_headers` policy: the browser hardening headers on every answer."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from potok.config.base import ConfigModel

_REFERRER_POLICIES = (
    "no-referrer",
    "no-referrer-when-downgrade",
    "origin",
    "origin-when-cross-origin",
    "same-origin",
    "strict-origin",
    "strict-origin-when-cross-origin",
    "unsafe-url",
)


def _no_control(value: str | None) -> str | None:
    if value is not None and any(ch in value for ch in "\r\n\x00"):
        raise ValueError("header values may not contain CR, LF or NUL")
    return value


class HstsConfig(ConfigModel):
    """Strict-Transport-Security: browsers use HTTPS only for this host from now on."""

    max_age: int = Field(
        31_536_000, ge=0, description="Seconds browsers remember it (default one year)."
    )
    include_subdomains: bool = Field(True, description="Cover every subdomain too.")
    preload: bool = Field(False, description="Ask to be put on the browsers' preload lists.")


class SecurityHeadersConfig(ConfigModel):
    """Security headers added to every answer of the route (a route's own block replaces the
    global one). A header the upstream already set is kept unless `override` is true."""

    hsts: HstsConfig | None = Field(
        default_factory=HstsConfig, description="Strict-Transport-Security (null: not sent)."
    )
    content_type_options: bool = Field(
        True, description="X-Content-Type-Options: nosniff (no MIME sniffing)."
    )
    frame_options: Literal["DENY", "SAMEORIGIN"] | None = Field(
        "DENY", description="X-Frame-Options (null: not sent)."
    )
    referrer_policy: str | None = Field(
        "strict-origin-when-cross-origin", description="Referrer-Policy (null: not sent)."
    )
    content_security_policy: str | None = Field(
        None,
        description=(
            "Content-Security-Policy for proxied answers (null: not sent). The gateway's own "
            "pages (/api/docs) always get a CSP of their own."
        ),
    )
    hide_upstream_server: bool = Field(
        True,
        description=(
            "Drop the upstream's Server and X-Powered-By headers, which name software and "
            "versions. The gateway itself never sends a version."
        ),
    )
    override: bool = Field(
        False,
        description="Replace the upstream's own values of these headers instead of keeping them.",
    )

    @field_validator("referrer_policy")
    @classmethod
    def _referrer(cls, value: str | None) -> str | None:
        if value is None:
            return value
        for token in value.split(","):
            if token.strip().lower() not in _REFERRER_POLICIES:
                raise ValueError(f"{token.strip()!r}: use one of {', '.join(_REFERRER_POLICIES)}")
        return value

    @field_validator("content_security_policy")
    @classmethod
    def _csp(cls, value: str | None) -> str | None:
        return _no_control(value)
