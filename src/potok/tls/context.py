"""SSLContexts of a listener: every certificate gets a context with the same settings.

SNI picks a certificate by switching the handshake's context (store.py), and OpenSSL then
takes the verification store and the ALPN choice from the new context: so each context is
built by the same function from the same settings, never configured piecemeal.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass

from potok.tls.config import ListenerTlsConfig


class CertificateError(ValueError):
    """A certificate, key or CA file that cannot be used: the message names the file."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """What every context of one listener shares (from its `tls:` block)."""

    minimum_version: ssl.TLSVersion
    ciphers: str
    alpn: tuple[str, ...]
    session_tickets: bool
    verify_mode: ssl.VerifyMode
    client_ca: str | None

    @classmethod
    def from_config(cls, config: ListenerTlsConfig, http2: bool = True) -> TlsSettings:
        offered = config.alpn if http2 else tuple(p for p in config.alpn if p != "h2")
        return cls(
            minimum_version=(
                ssl.TLSVersion.TLSv1_3 if config.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
            ),
            ciphers=config.ciphers,
            alpn=offered or ("http/1.1",),
            session_tickets=config.session_tickets,
            verify_mode={
                "none": ssl.CERT_NONE,
                "optional": ssl.CERT_OPTIONAL,
                "required": ssl.CERT_REQUIRED,
            }[config.client_auth],
            client_ca=config.client_ca,
        )


def base_context(settings: TlsSettings) -> ssl.SSLContext:
    """A server context with the listener's settings and no certificate yet."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = settings.minimum_version
    try:
        context.set_ciphers(settings.ciphers)
    except ssl.SSLError as exc:
        raise CertificateError(f"ciphers {settings.ciphers!r}: no usable cipher ({exc})") from None
    # No compression (CRIME); a fresh ECDHE key per handshake. Mozilla "intermediate"
    # leaves the cipher order to the client (all listed suites are strong).
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_SINGLE_ECDH_USE
    if not settings.session_tickets:
        context.options |= ssl.OP_NO_TICKET
        context.num_tickets = 0
    context.set_alpn_protocols(list(settings.alpn))
    if settings.verify_mode != ssl.CERT_NONE and settings.client_ca is not None:
        context.verify_mode = settings.verify_mode
        try:
            context.load_verify_locations(cafile=settings.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise CertificateError(f"client_ca {settings.client_ca}: {_reason(exc)}") from None
    return context


def context_from_files(settings: TlsSettings, cert: str, key: str) -> ssl.SSLContext:
    """A context serving the chain in `cert` with `key` (blocking: file reads)."""
    for path in (cert, key):
        if not os.path.isfile(path):
            raise CertificateError(f"{path}: no such file")
    context = base_context(settings)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise CertificateError(
            f"certificate {cert} with key {key}: {_reason(exc)} (both PEM; the key must "
            "match the first certificate and be unencrypted)"
        ) from None
    return context


def context_from_pem(settings: TlsSettings, chain_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """The same from PEM bytes (certificates obtained at run time, e.g. by ACME). Python's
    ssl loads chains only from files: they pass through a private temporary file that is
    removed at once."""
    fd, path = tempfile.mkstemp(prefix="potok-tls-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as file:  # mkstemp: mode 0600, only this user reads it
            file.write(key_pem.rstrip() + b"\n" + chain_pem)
        context = base_context(settings)
        try:
            context.load_cert_chain(path)
        except ssl.SSLError as exc:
            raise CertificateError(f"installed certificate: {_reason(exc)}") from None
        return context
    finally:
        os.unlink(path)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
