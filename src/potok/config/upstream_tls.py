"""Config of TLS towards a service's https:// targets: whom to trust, what name to check,
and the gateway's own client certificate (mutual TLS)."""

from __future__ import annotations

import hashlib
import ipaddress
import ssl
from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from potok.config.base import ConfigModel
from potok.config.paths import ConfigPath


class UpstreamTlsConfig(ConfigModel):
    """TLS to a service's https:// targets. Without this block they are verified against
    the system's CAs with the target's host name; the TLS context is built once per service
    when the config loads (files read then; a reload rebuilds it when a file changed)."""

    ca_file: ConfigPath | None = Field(
        None,
        description=(
            "PEM bundle of the CAs trusted for the targets' certificates, used instead of the "
            "system's (a private CA): a certificate from a public CA is then refused."
        ),
    )
    server_name: str | None = Field(
        None,
        description=(
            "Host name sent in SNI and checked against the certificate, for every target. "
            "Needed when targets are given by IP address but certified for a name; without "
            "it a target's own host name is used (an IP target is checked against the "
            "certificate's IP addresses and sends no SNI)."
        ),
    )
    cert_file: ConfigPath | None = Field(
        None,
        description="PEM client certificate (chain) the gateway presents, for mutual TLS.",
    )
    key_file: ConfigPath | None = Field(
        None, description="PEM private key of `cert_file` (unencrypted)."
    )
    min_version: Literal["1.2", "1.3"] = Field(
        "1.2", description="Oldest TLS version accepted from a target."
    )
    insecure_skip_verify: bool = Field(
        False,
        description=(
            "Accept any certificate for any name: the connection is encrypted but not "
            "authenticated, so anyone on the path can read and change it. For tests and "
            "migrations only; the gateway logs a warning at every load while it is on."
        ),
    )
    # Built by validation (below): the files are read once, off the event loop on a reload.
    _context: UpstreamTlsContext | None = PrivateAttr(None)

    @field_validator("server_name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().rstrip(".").lower()
        try:
            ipaddress.ip_address(value)
        except ValueError:
            pass
        else:
            raise ValueError(f"{value!r}: an IP address is never sent in SNI; give a host name")
        if not value or any(c.isspace() or c in "/:@" for c in value):
            raise ValueError(f"{value!r} is not a host name")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> UpstreamTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give 'cert_file' and 'key_file' together")
        if self.insecure_skip_verify and self.ca_file is not None:
            raise ValueError(
                "'ca_file' has no effect with 'insecure_skip_verify: true'; keep one of them"
            )
        self._context = build_context(self)
        return self

    @property
    def context(self) -> UpstreamTlsContext:
        """The client TLS context these settings make (built when validated)."""
        assert self._context is not None
        return self._context


class UpstreamTlsContext:
    """A service's client TLS context, built once when the config is validated (off the
    event loop on a reload), with what the proxy needs beside it.

    Equal when built from the same settings and the same file contents: a reload that
    changes neither keeps the running service (and its pools); a renewed certificate
    or a new CA bundle builds a new one.
    """

    __slots__ = ("context", "fingerprint", "h2_context", "server_name", "verifies")

    def __init__(
        self, context: ssl.SSLContext, server_name: str | None, verifies: bool, fingerprint: str
    ) -> None:
        self.context = context
        self.h2_context = context  # ALPN h2 instead of http/1.1: set by build_context
        self.server_name = server_name
        self.verifies = verifies
        self.fingerprint = fingerprint

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UpstreamTlsContext) and other.fingerprint == self.fingerprint

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return f"UpstreamTlsContext({self.fingerprint[:12]})"


_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def build_context(config: UpstreamTlsConfig) -> UpstreamTlsContext:
    """The SSLContext for `config`; ValueError naming the field whose file is unusable.

    Two contexts from the same settings: ALPN http/1.1 for the proxy's connections, and
    ALPN h2 for a gRPC route's (upstream/h2_client.py). Blocking file I/O: called by
    config validation, which runs off the event loop.
    """
    digest = hashlib.sha256(config.model_dump_json().encode())
    context = _client_context(config, "http/1.1", digest)
    h2_context = _client_context(config, "h2", None)
    tls = UpstreamTlsContext(
        context, config.server_name, not config.insecure_skip_verify, digest.hexdigest()
    )
    tls.h2_context = h2_context
    return tls


def _client_context(
    config: UpstreamTlsConfig, alpn: str, digest: hashlib._Hash | None
) -> ssl.SSLContext:
    # PROTOCOL_TLS_CLIENT: certificate and host name checked unless told otherwise.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = _VERSIONS[config.min_version]
    context.set_alpn_protocols([alpn])
    if config.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif config.ca_file is not None:
        pem = _read("ca_file", config.ca_file)
        if digest is not None:
            digest.update(pem)
        try:
            context.load_verify_locations(cadata=pem.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as exc:
            raise ValueError(f"ca_file: {config.ca_file!r} holds no usable PEM CA: {exc}") from exc
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if config.cert_file is not None and config.key_file is not None:
        if digest is not None:
            digest.update(_read("cert_file", config.cert_file))
            digest.update(_read("key_file", config.key_file))
        try:
            context.load_cert_chain(config.cert_file, config.key_file, password=_no_password)
        except _EncryptedKey as exc:
            raise ValueError(
                f"key_file: {config.key_file!r} is encrypted; give an unencrypted key"
            ) from exc
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                f"cert_file/key_file: {config.cert_file!r} with {config.key_file!r} is not a "
                f"usable certificate and matching key: {exc}"
            ) from exc
    return context


class _EncryptedKey(Exception):
    pass


def _no_password() -> str:
    # OpenSSL would otherwise prompt on the terminal, and a gateway has nobody to answer.
    raise _EncryptedKey


def _read(field: str, path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ValueError(f"{field}: cannot read {path!r}: {exc.strerror or exc}") from exc
