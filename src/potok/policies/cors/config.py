"""Config of the `cors` policy: which browser origins may call the route, and how."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator

from potok.config.base import ConfigModel
from potok.config.units import OptionalDuration

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HOST_LABEL = re.compile(r"^[a-z0-9-]+$")


def check_origin(value: str) -> str:
    """An origin (`https://app.example.com[:port]`), a pattern (`https://*.example.com`) or `*`."""
    if value == "*":
        return value
    origin = value.lower().rstrip("/")
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r}: an origin is scheme://host[:port], e.g. https://app.example")
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"{value!r}: an origin has no path, query or user part")
    host = parts.netloc.rsplit(":", 1)[0] if not parts.netloc.endswith("]") else parts.netloc
    if ":" in parts.netloc and not parts.netloc.endswith("]"):
        port = parts.netloc.rsplit(":", 1)[1]
        if port != "*" and not port.isdigit():
            raise ValueError(f"{value!r}: bad port")
    labels = host.split(".")
    if "*" in host:
        if labels[0] != "*" or "*" in ".".join(labels[1:]) or len(labels) < 3:
            raise ValueError(
                f"{value!r}: '*' may only be the first label of a domain with at least two more, "
                "e.g. https://*.example.com"
            )
    elif not host.startswith("[") and not all(_HOST_LABEL.match(label) for label in labels):
        raise ValueError(f"{value!r}: bad host")
    return origin


def _check_tokens(values: tuple[str, ...], what: str) -> None:
    for value in values:
        if value != "*" and not _TOKEN.match(value):
            raise ValueError(f"{value!r} is not a valid {what}")


class CorsConfig(ConfigModel):
    """Cross-origin requests from browsers: preflights are answered here (never proxied)
    and every answer carries `Vary: Origin`."""

    allow_credentials: bool = Field(
        False,
        description=(
            "Allow cookies and Authorization with `credentials: 'include'`: answers name the "
            "caller's origin and send Access-Control-Allow-Credentials: true."
        ),
    )
    allow_origins: tuple[str, ...] = Field(
        min_length=1,
        description=(
            "Origins allowed to call, exact ('https://app.example.com', 'http://localhost:5173') "
            "or a pattern for subdomains ('https://*.example.com'); '*' allows any origin but "
            "cannot be combined with allow_credentials."
        ),
    )
    allow_methods: tuple[str, ...] = Field(
        ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"),
        description="Methods a preflight may ask for.",
    )
    allow_headers: tuple[str, ...] = Field(
        ("Accept", "Accept-Language", "Authorization", "Content-Type", "X-Request-ID"),
        description=(
            "Request headers a preflight may ask for (case-insensitive); '*' allows any "
            "(not with credentials)."
        ),
    )
    expose_headers: tuple[str, ...] = Field(
        ("X-Request-ID", "Retry-After", "RateLimit", "RateLimit-Policy"),
        description="Response headers the calling script may read.",
    )
    max_age: OptionalDuration = Field(
        600.0, description="How long a browser may cache a preflight answer (0: not at all)."
    )

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        _no_star_with_credentials(value, info)
        return tuple(check_origin(item) for item in value)

    @field_validator("allow_methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        _no_star_with_credentials(value, info)
        _check_tokens(value, "method")
        return tuple(item.upper() for item in value)

    @field_validator("allow_headers", "expose_headers")
    @classmethod
    def _headers(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        _no_star_with_credentials(value, info)
        _check_tokens(value, "header name")
        return value


def _no_star_with_credentials(value: tuple[str, ...], info: ValidationInfo) -> None:
    if "*" in value and info.data.get("allow_credentials"):
        raise ValueError(
            "'*' cannot be combined with allow_credentials: browsers refuse such answers; "
            "list the allowed values explicitly"
        )
