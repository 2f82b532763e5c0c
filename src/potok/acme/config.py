"""The `acme:` section: which names get certificates, from which CA, stored where."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from potok.config.base import ConfigModel
from potok.config.paths import ConfigPath
from potok.config.units import Duration

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"

# A DNS name as a CA issues for it: letters, digits and hyphens per label, no wildcard
# (HTTP-01 cannot prove control of a wildcard, RFC 8555 8.3).
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def check_dns_name(name: str) -> str:
    """`name` lower-cased, or ValueError saying why a CA would not issue for it here."""
    host = name.strip().lower().rstrip(".")
    if host.startswith("*."):
        raise ValueError(f"{name!r}: HTTP-01 cannot validate a wildcard name")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        raise ValueError(f"{name!r}: give a DNS name, not an IP address")
    labels = host.split(".")
    if len(host) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{name!r}: not a fully qualified DNS name")
    return host


class AcmeRetryConfig(ConfigModel):
    """Waiting after a failed order (CA down, challenge refused): doubling from `initial`
    up to `max`, with jitter, so a fleet does not hammer a CA that is struggling."""

    initial: Duration = Field(60.0, description="Wait after the first failure.")
    max: Duration = Field(3600.0, description="Longest wait between attempts.")


class AcmeConfig(ConfigModel):
    """Automatic certificates (ACME, RFC 8555) for the names in `domains`."""

    directory_url: str = Field(
        LETS_ENCRYPT,
        description=(
            "The CA's ACME directory, e.g. Let's Encrypt's (default) or its staging "
            "https://acme-staging-v02.api.letsencrypt.org/directory."
        ),
    )
    email: str | None = Field(
        None, description="Contact address for the ACME account (expiry and policy notices)."
    )
    agree_to_terms: bool = Field(
        False,
        description=(
            "You agree to the CA's terms of service (its directory's termsOfService); required "
            "before any account is made."
        ),
    )
    ca_bundle: ConfigPath | None = Field(
        None,
        description=(
            "PEM file of CAs to verify the ACME server's own HTTPS with (a private or test CA "
            "such as Pebble's); default: the system's trusted CAs."
        ),
    )
    domains: tuple[tuple[str, ...], ...] = Field(
        (),
        description=(
            "Certificates to obtain: each item is a name (one certificate for it) or a list "
            "of names sharing one certificate, the first being its main name. Empty: this "
            "instance only answers challenges for certificates others order."
        ),
    )
    storage: Literal["database", "directory"] = Field(
        "database",
        description=(
            "Where certificates, keys and the account live: 'database' (the `database:` "
            "section, shared by every instance) or 'directory' (PEM files under `path`)."
        ),
    )
    path: ConfigPath | None = Field(
        None, description="Folder of the 'directory' storage (relative to the config file)."
    )
    lock: Literal["storage", "redis"] = Field(
        "storage",
        description=(
            "What lets one instance order at a time: 'storage' (a PostgreSQL advisory lock, or "
            "a lock file beside a SQLite database or in the directory) or 'redis' (a lease in "
            "the `redis:` section's server, for directories not shared through one host)."
        ),
    )
    renew_at: float = Field(
        2 / 3,
        gt=0.0,
        lt=1.0,
        description="Renew once this share of a certificate's lifetime has passed.",
    )
    check_interval: Duration = Field(
        3600.0,
        description=(
            "How often the stored certificates are looked at again (a renewal or revocation "
            "by another instance is picked up within this time)."
        ),
    )
    order_timeout: Duration = Field(
        120.0, description="Longest wait for the CA to validate and issue one order."
    )
    retry: AcmeRetryConfig = Field(
        default_factory=AcmeRetryConfig, description="Backoff after a failed order."
    )

    @field_validator("domains", mode="before")
    @classmethod
    def _groups(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return tuple((item,) if isinstance(item, str) else item for item in value)
        return value

    @field_validator("domains")
    @classmethod
    def _names(cls, value: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
        groups = []
        seen: set[str] = set()
        for group in value:
            if not group:
                raise ValueError("a certificate needs at least one name")
            names = tuple(dict.fromkeys(check_dns_name(name) for name in group))
            for name in names:
                if name in seen:
                    raise ValueError(f"{name!r} is listed for two certificates")
                seen.add(name)
            groups.append(names)
        return tuple(groups)

    @field_validator("directory_url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("the ACME directory must be an https:// URL (RFC 8555 6.1)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AcmeConfig:
        if self.domains and not self.agree_to_terms:
            raise ValueError(
                "agree_to_terms: read the CA's terms of service and set it to true to order "
                "certificates"
            )
        if self.storage == "directory" and self.path is None:
            raise ValueError("path: the 'directory' storage needs a folder")
        if self.storage == "database" and self.path is not None:
            raise ValueError("path: only for storage: directory")
        if self.retry.initial > self.retry.max:
            raise ValueError("retry.initial is longer than retry.max")
        return self
