"""What a TLS connection learnt in its handshake, read once when the connection is made."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """A client certificate that verified against the listener's `client_ca`."""

    common_name: str | None
    dns_names: tuple[str, ...]
    emails: tuple[str, ...]
    uris: tuple[str, ...]
    issuer: str | None
    serial: str

    @property
    def subject(self) -> str:
        """The name that identifies the client: its CN, else its first SAN."""
        for name in (self.common_name, *self.dns_names, *self.uris, *self.emails):
            if name:
                return name
        return f"serial:{self.serial}"


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """The TLS side of one client connection."""

    version: str
    cipher: str
    alpn: str | None
    session_reused: bool
    client_certificate: ClientCertificate | None


def _rdn(name: Any, key: str) -> str | None:
    for rdn in name or ():
        for attribute, value in rdn:
            if attribute == key:
                return str(value)
    return None


def client_certificate(peer: dict[str, Any] | None) -> ClientCertificate | None:
    """From `SSLObject.getpeercert()`: only a verified certificate yields one (with
    client_auth none the dict is empty)."""
    if not peer:
        return None
    sans = peer.get("subjectAltName", ())
    return ClientCertificate(
        common_name=_rdn(peer.get("subject"), "commonName"),
        dns_names=tuple(v for k, v in sans if k == "DNS"),
        emails=tuple(v for k, v in sans if k == "email"),
        uris=tuple(v for k, v in sans if k == "URI"),
        issuer=_rdn(peer.get("issuer"), "commonName"),
        serial=str(peer.get("serialNumber", "")),
    )


def tls_info(ssl_object: ssl.SSLObject) -> TlsInfo:
    cipher = ssl_object.cipher()
    return TlsInfo(
        version=ssl_object.version() or "",
        cipher=cipher[0] if cipher else "",
        alpn=ssl_object.selected_alpn_protocol(),
        session_reused=ssl_object.session_reused,
        client_certificate=client_certificate(ssl_object.getpeercert()),
    )
