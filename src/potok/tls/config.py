"""The `tls:` block of an https listener (`server.listeners[].tls`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from potok.config.base import ConfigModel
from potok.config.paths import ConfigPath
from potok.config.units import OptionalDuration

# Mozilla "intermediate" (server side TLS guidelines, v5.7): TLS 1.2 suites with forward
# secrecy and AEAD only. TLS 1.3's three suites are OpenSSL's defaults, the same list.
INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)

AlpnProtocol = Literal["h2", "http/1.1"]
ClientAuth = Literal["none", "optional", "required"]


class CertificateConfig(ConfigModel):
    """One certificate: a PEM chain (leaf first) and its private key."""

    cert: ConfigPath = Field(
        description="PEM file with the certificate and its intermediates, leaf first."
    )
    key: ConfigPath = Field(description="PEM file with the private key (unencrypted).")
    names: tuple[str, ...] = Field(
        (),
        description=(
            "Host names it is chosen for by SNI: exact ('api.example.com') or one-label "
            "wildcards ('*.example.com'). Empty: the DNS names of the certificate itself."
        ),
    )
    default: bool = Field(
        False,
        description=(
            "Served to clients that send no SNI or a name no certificate has. At most one; "
            "without one, the first certificate."
        ),
    )


class ListenerTlsConfig(ConfigModel):
    """TLS of one https listener: certificates by SNI, versions, ALPN, client certificates."""

    certificates: tuple[CertificateConfig, ...] = Field(
        min_length=1,
        description="Certificates served, chosen by the name the client asks for (SNI).",
    )
    min_version: Literal["1.2", "1.3"] = Field(
        "1.2", description="Oldest TLS version accepted (TLS 1.3 is always offered)."
    )
    ciphers: str = Field(
        INTERMEDIATE_CIPHERS,
        description=(
            "OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are OpenSSL's). Default: "
            "Mozilla's 'intermediate'."
        ),
    )
    alpn: tuple[AlpnProtocol, ...] = Field(
        ("h2", "http/1.1"),
        min_length=1,
        description=(
            "ALPN protocols offered, in order of preference ('h2', 'http/1.1'); 'h2' is "
            "left out while server.http2.enabled is false."
        ),
    )
    session_tickets: bool = Field(
        True,
        description=(
            "Session resumption by tickets (TLS 1.2 and 1.3): a returning client skips the "
            "certificate exchange."
        ),
    )
    client_auth: ClientAuth = Field(
        "none",
        description=(
            "Client certificates (mTLS): 'required' refuses a handshake without a certificate "
            "signed by client_ca; 'optional' verifies one if sent; 'none' asks for none."
        ),
    )
    client_ca: ConfigPath | None = Field(
        None, description="PEM bundle of the CAs client certificates must chain to."
    )
    reload_interval: OptionalDuration = Field(
        5.0,
        description=(
            "How often the certificate files are checked for changes (their modification "
            "time); 0: only on SIGHUP."
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> ListenerTlsConfig:
        if self.client_auth != "none" and self.client_ca is None:
            raise ValueError(f"client_auth {self.client_auth!r} needs client_ca (a PEM bundle)")
        if sum(1 for c in self.certificates if c.default) > 1:
            raise ValueError("certificates: at most one may be the default")
        return self
